"""Qwen's audio-reading models' towers as vLLM builds them: the Omni thinkers' vision and audio, Qwen2-Audio's."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import int_fields, thinker_section, with_defaults
from engine.model.linear_shape import LinearShape
from engine.model.vision_towers import qwen3_vl_shapes, qwen_vl_shapes

# transformers' Qwen2_5OmniVisionEncoderConfig and Qwen2_5OmniAudioEncoderConfig defaults, for keys a config.json
# leaves out (the vision class's hidden_size is 3584, not the 1280 of Qwen2.5-Omni's own configs).
_VISION_DEFAULTS: dict[str, Any] = {
    "depth": 32,
    "hidden_size": 3584,
    "intermediate_size": 3420,
    "in_channels": 3,
}
_VISION_DEFAULTS |= {
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": 3584,
}
_AUDIO_DEFAULTS = {"num_mel_bins": 128, "encoder_layers": 32, "encoder_ffn_dim": 5120, "d_model": 1280}
_AUDIO_DEFAULTS |= {"output_dim": 3584}
# Qwen3OmniMoeVisionEncoderConfig's and Qwen3OmniMoeAudioEncoderConfig's.
_QWEN3_VISION_DEFAULTS: dict[str, Any] = {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304}
_QWEN3_VISION_DEFAULTS |= {"patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2}
_QWEN3_VISION_DEFAULTS |= {"out_hidden_size": 3584, "deepstack_visual_indexes": [8, 16, 24], "in_channels": 3}
_QWEN3_AUDIO_DEFAULTS = _AUDIO_DEFAULTS | {"downsample_hidden_size": 480}


def _encoder_blocks(audio: dict[str, int]) -> list[LinearShape]:
    """The Whisper-style blocks both audio towers have: q/k/v/out and fc1/fc2, ``d_model`` wide."""
    d, layers, ffn = audio["d_model"], audio["encoder_layers"], audio["encoder_ffn_dim"]
    return [
        LinearShape("audio.attn.qkvo", "vision", d, d, 4 * layers),
        LinearShape("audio.mlp.fc1", "vision", d, ffn, layers),
        LinearShape("audio.mlp.fc2", "vision", ffn, d, layers),
    ]


def _whisper_encoder(audio: dict[str, int]) -> tuple[list[LinearShape], int]:
    """What Qwen2.5-Omni's and Qwen2-Audio's encoders share: two Conv1d of kernel 3 (mel bins → d_model,
    d_model → d_model) and Whisper's blocks (q, v, out biased, k not; fc1 / fc2 biased; two LayerNorms)."""
    d, layers, ffn = audio["d_model"], audio["encoder_layers"], audio["encoder_ffn_dim"]
    convs = audio["num_mel_bins"] * 3 * d + d + d * 3 * d + d
    block = 3 * d + ffn + d + 2 * 2 * d
    return _encoder_blocks(audio), convs + layers * block


def _audio_shapes(audio_config: dict[str, Any]) -> tuple[list[LinearShape], int]:
    """transformers' Qwen2_5OmniAudioEncoder, which vLLM builds as is (nn.Linear: never quantized): the Whisper
    encoder, a sinusoidal position buffer (not a parameter), a two-row bos/eos embedding of the output width,
    ln_post and the biased proj into the text width."""
    audio = int_fields(audio_config, _AUDIO_DEFAULTS)
    d, out = audio["d_model"], audio["output_dim"]
    shapes, vectors = _whisper_encoder(audio)
    return [*shapes, LinearShape("audio.proj", "vision", d, out, 1)], vectors + 2 * out + 2 * d + out


def qwen2_audio_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """Qwen2-Audio (``qwen2_audio``, qwen2_audio.py): transformers' Qwen2AudioEncoder and an nn.Linear projector,
    neither with the quant config: the Whisper encoder, a learned position per ``max_source_positions``, a final
    LayerNorm, and the projector from ``d_model`` into the text width with a bias."""
    audio = int_fields(config.get("audio_config") or {}, _AUDIO_DEFAULTS | {"max_source_positions": 1500})
    d = audio["d_model"]
    shapes, vectors = _whisper_encoder(audio)
    vectors += audio["max_source_positions"] * d + 2 * d + text_hidden
    return [*shapes, LinearShape("audio.projector", "vision", d, text_hidden, 1)], vectors


def _qwen3_audio_shapes(audio_config: dict[str, Any]) -> tuple[list[LinearShape], int]:
    """vLLM's Qwen3OmniMoeAudioEncoder, built without the quant config.

    Three biased 3×3 Conv2d of ``downsample_hidden_size`` channels, each halving the mel axis, a bias-free conv_out
    from channels × the mel bins left, blocks of a biased fused qkv / out_proj and fc1 / fc2 with two LayerNorms,
    ln_post, and proj1 (d_model²) and proj2 (into the text width), both biased.
    """
    audio = int_fields(audio_config, _QWEN3_AUDIO_DEFAULTS)
    d, layers, ffn, out = (
        audio["d_model"],
        audio["encoder_layers"],
        audio["encoder_ffn_dim"],
        audio["output_dim"],
    )
    channels = audio["downsample_hidden_size"]
    mel_left = (((audio["num_mel_bins"] + 1) // 2 + 1) // 2 + 1) // 2
    shapes = [
        LinearShape("audio.conv_out", "vision", channels * mel_left, d, 1),
        *_encoder_blocks(audio),
        LinearShape("audio.proj1", "vision", d, d, 1),
        LinearShape("audio.proj2", "vision", d, out, 1),
    ]
    convs = 9 * channels + channels + 2 * (9 * channels * channels + channels)
    block = 4 * d + ffn + d + 2 * 2 * d  # qkv and out biases, fc1 and fc2 biases, two LayerNorms
    return shapes, convs + layers * block + 2 * d + d + out


def qwen3_omni_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """Qwen3-Omni's thinker: Qwen3Omni_VisionTransformer (``visual``, with the quant config: qwen3_vl.py's blocks
    and mergers, a learned position per patch of ``image_size``) and the audio tower, from the config classes'
    defaults where the thinker_config leaves a key out."""
    del text_hidden  # the mergers project into the vision config's out_hidden_size
    thinker = thinker_section(config)
    vision = with_defaults(thinker.get("vision_config") or {}, _QWEN3_VISION_DEFAULTS)
    if vision.get("image_size"):  # vLLM sizes the position table from it, not num_position_embeddings
        vision["num_position_embeddings"] = (int(vision["image_size"]) // int(vision["patch_size"])) ** 2
    shapes, vectors = qwen3_vl_shapes({"model_type": "qwen3_omni_moe", "vision_config": vision})
    audio, audio_vectors = _qwen3_audio_shapes(thinker.get("audio_config") or {})
    return shapes + audio, vectors + audio_vectors


def qwen2_5_omni_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """The thinker's Qwen2_5_VisionTransformer (``visual``, with the quant config) and audio tower, each built from
    its config class's defaults where the thinker_config leaves it out; the talker and token2wav are not loaded."""
    thinker = thinker_section(config)
    vision = with_defaults(thinker.get("vision_config") or {}, _VISION_DEFAULTS)
    shapes, vectors = qwen_vl_shapes(
        {"model_type": "qwen2_5_vl", "vision_config": vision, "hidden_size": text_hidden}
    )
    audio, audio_vectors = _audio_shapes(thinker.get("audio_config") or {})
    return shapes + audio, vectors + audio_vectors
