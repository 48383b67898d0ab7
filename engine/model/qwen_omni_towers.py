"""Qwen2.5-Omni's thinker towers (``qwen2_5_omni``) as vLLM's qwen2_5_omni_thinker.py builds them: vision and audio."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import int_fields, with_defaults
from engine.model.linear_shape import LinearShape
from engine.model.vision_towers import qwen_vl_shapes

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


def _audio_shapes(audio_config: dict[str, Any]) -> tuple[list[LinearShape], int]:
    """transformers' Qwen2_5OmniAudioEncoder, which vLLM builds as is (nn.Linear: never quantized).

    Two Conv1d of kernel 3 (mel bins → d_model, d_model → d_model), a sinusoidal position buffer (not a
    parameter), a two-row bos/eos embedding of the output width, Whisper-style blocks (q, v, out biased, k not;
    fc1 / fc2 biased; two LayerNorms), ln_post and the biased proj into the text width.
    """
    audio = int_fields(audio_config, _AUDIO_DEFAULTS)
    d, layers, ffn, out = (
        audio["d_model"],
        audio["encoder_layers"],
        audio["encoder_ffn_dim"],
        audio["output_dim"],
    )
    shapes = [
        LinearShape("audio.attn.qkvo", "vision", d, d, 4 * layers),
        LinearShape("audio.mlp.fc1", "vision", d, ffn, layers),
        LinearShape("audio.mlp.fc2", "vision", ffn, d, layers),
        LinearShape("audio.proj", "vision", d, out, 1),
    ]
    convs = audio["num_mel_bins"] * 3 * d + d + d * 3 * d + d
    block = 3 * d + ffn + d + 2 * 2 * d  # q, v, out biases; fc1 and fc2 biases; two LayerNorms
    return shapes, convs + 2 * out + layers * block + 2 * d + out


def qwen2_5_omni_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """The thinker's Qwen2_5_VisionTransformer (``visual``, with the quant config) and audio tower, each built from
    its config class's defaults where the thinker_config leaves it out; the talker and token2wav are not loaded."""
    thinker = config.get("thinker_config")
    thinker = thinker if isinstance(thinker, dict) else config
    vision = with_defaults(thinker.get("vision_config") or {}, _VISION_DEFAULTS)
    shapes, vectors = qwen_vl_shapes(
        {"model_type": "qwen2_5_vl", "vision_config": vision, "hidden_size": text_hidden}
    )
    audio, audio_vectors = _audio_shapes(thinker.get("audio_config") or {})
    return shapes + audio, vectors + audio_vectors
