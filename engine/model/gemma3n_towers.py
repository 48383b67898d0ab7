"""Gemma 3n's towers as vLLM 0.32's gemma3n_mm.py builds them: MobileNetV5, the conformer audio encoder, embedders."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import int_fields, with_defaults
from engine.model.linear_shape import LinearShape

Shapes = tuple[list[LinearShape], int]
# transformers' Gemma3nAudioConfig and Gemma3nVisionConfig defaults, for keys a config.json leaves out.
_AUDIO_DEFAULTS = {
    "hidden_size": 1536,
    "input_feat_size": 128,
    "vocab_size": 128,
    "conf_num_hidden_layers": 12,
}
_AUDIO_DEFAULTS |= {"conf_num_attention_heads": 8, "conf_conv_kernel_size": 5}
_AUDIO_CONVS: dict[str, Any] = {
    "sscp_conv_channel_size": [128, 32],
    "sscp_conv_kernel_size": [[3, 3], [3, 3]],
}
_AUDIO_CONVS |= {"sscp_conv_stride_size": [[2, 2], [2, 2]]}
_VISION_DEFAULTS = {"hidden_size": 2048, "vocab_size": 128}
_VISION_ARCHITECTURE = "mobilenetv5_300m_enc"
# Parameters of the timm encoders gemma3n_mm.py's AutoModel builds (transformers' TimmWrapperModel: num_classes 0).
# timm 1.0.31's mobilenetv5_300m_enc so built on the meta device holds 294,126,912 (conv_stem 1,856, the four
# stages 278,879,872, the multi-scale fusion adapter 15,245,056). With the text model and audio tower read here,
# Gemma 3n E4B's checkpoint comes to 7,849,978,192 and E2B's to 5,439,438,272: the Hub's 7.85B and 5.44B.
_MOBILENET_V5_PARAMS = {"mobilenetv5_300m_enc": 294_126_912}


def _subsample_params(audio: dict[str, Any], width: int) -> int:
    """Gemma3nAudioSubSampleConvProjection: two bias-free Conv2d with a weighted group norm each, then a
    Linear from channels × frequencies (each conv pads the frequency axis by one on each side) into ``width``."""
    channels_in, frequencies, params = 1, int(audio["input_feat_size"]), 0
    for channels, (kernel_h, kernel_w), (_, stride_w) in zip(
        audio["sscp_conv_channel_size"],
        audio["sscp_conv_kernel_size"],
        audio["sscp_conv_stride_size"],
        strict=True,
    ):
        params += channels * channels_in * kernel_h * kernel_w + channels
        channels_in, frequencies = channels, (frequencies + 2 - kernel_w) // stride_w + 1
    return params + channels_in * frequencies * width


def _audio_shapes(audio_config: dict[str, Any], audio_sizes: dict[str, int]) -> Shapes:
    """transformers' Gemma3nAudioEncoder, which vLLM builds as is (nn.Linear, never quantized).

    Each conformer block: two macaron feed-forwards (h → 4h → h, a norm before and after), attention (q, k, v,
    the relative-position projection and post, h × h each; per_dim_scale of a head's size; two norms), the
    light conv (linear_start h → 2h, a depthwise kernel, its norm, linear_end h → h, a norm before) and a
    last norm. No biases. ``audio_sizes``: the config's integer sizes over ``_AUDIO_DEFAULTS``.
    """
    audio = audio_sizes | with_defaults({key: audio_config.get(key) for key in _AUDIO_CONVS}, _AUDIO_CONVS)
    h, blocks, heads = (
        audio["hidden_size"],
        audio["conf_num_hidden_layers"],
        audio["conf_num_attention_heads"],
    )
    shapes = [
        LinearShape("audio.ffw.fc1", "vision", h, 4 * h, 2 * blocks),
        LinearShape("audio.ffw.fc2", "vision", 4 * h, h, 2 * blocks),
        LinearShape("audio.attn.qkv_pos_post", "vision", h, h, 5 * blocks),
        LinearShape("audio.lconv1d.linear_start", "vision", h, 2 * h, blocks),
        LinearShape("audio.lconv1d.linear_end", "vision", h, h, blocks),
    ]
    norms = 2 * 2 + 2 + 2 + 1  # the feed-forwards', attention's, the light conv's, the block's
    vectors = blocks * (norms * h + h // heads + h * audio["conf_conv_kernel_size"])
    return shapes, vectors + _subsample_params(audio, h)


def _embedder_shapes(name: str, section: dict[str, int], text_hidden: int) -> Shapes:
    """Gemma3nMultimodalEmbedder: a vocab × width embedding, two norms of the width, a bias-free width → text
    projection (a RowParallelLinear without quant_config) and a weightless norm."""
    width = section["hidden_size"]
    projection = LinearShape(f"{name}.embedding_projection", "vision", width, text_hidden, 1)
    return [projection], section["vocab_size"] * width + 2 * width


def gemma3n_shapes(config: dict[str, Any], text_hidden: int) -> Shapes | None:
    """The vision tower, embed_vision, the audio tower and embed_audio; None for a vision architecture not read.

    gemma3n_mm.py builds both towers with transformers' AutoModel and both embedders without the quantization
    config: none of them is quantized.
    """
    vision_config = config.get("vision_config") or {}
    audio_config = config.get("audio_config") or {}
    tower = _MOBILENET_V5_PARAMS.get(str(vision_config.get("architecture") or _VISION_ARCHITECTURE))
    if tower is None or vision_config.get("model_args"):  # timm's keyword arguments may change its shape
        return None
    vision = int_fields(vision_config, _VISION_DEFAULTS)
    embed_vision, embed_vision_vectors = _embedder_shapes("embed_vision", vision, text_hidden)
    audio_sizes = int_fields(audio_config, _AUDIO_DEFAULTS)
    audio, audio_vectors = _audio_shapes(audio_config, audio_sizes)
    embed_audio, embed_audio_vectors = _embedder_shapes("embed_audio", audio_sizes, text_hidden)
    shapes = embed_vision + audio + embed_audio
    return shapes, tower + embed_vision_vectors + audio_vectors + embed_audio_vectors
