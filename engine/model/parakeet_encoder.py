"""The Nemotron Omni models' sound encoder (vLLM's ProjectedParakeet: transformers' ParakeetEncoder and a
projection), as vLLM's parakeet.py builds it."""

from __future__ import annotations

import math
from typing import Any

from engine.model.config_json import int_fields
from engine.model.linear_shape import LinearShape

# transformers' ParakeetEncoderConfig defaults, for the keys a sound_config leaves out.
_ENCODER_DEFAULTS = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 8}
_ENCODER_DEFAULTS |= {"intermediate_size": 4096, "conv_kernel_size": 9, "num_mel_bins": 80}
_ENCODER_DEFAULTS |= {"subsampling_factor": 8, "subsampling_conv_channels": 256}
_ENCODER_DEFAULTS |= {"subsampling_conv_kernel_size": 3, "subsampling_conv_stride": 2}
# Five LayerNorms a block: before each feed-forward, the attention and the conv module, and after the block.
_BLOCK_LAYER_NORMS = 5


def parakeet_shapes(sound_config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int] | None:
    """ProjectedParakeet, built without the quantization config (plain nn modules); None without the
    ``projection_hidden_size`` vLLM's ParakeetConfig requires.

    vLLM's ParakeetConfig.from_hf_config sets ``attention_bias`` False, so the feed-forwards and q/k/v/o have no
    biases, whatever the sound config says; the conv module's follow ``convolution_bias`` (default True).

    - Subsampling: ``log2(subsampling_factor)`` Conv2d stages of ``subsampling_conv_channels`` C (a 1 → C conv,
      then a depthwise and a pointwise conv a stage, all biased), and a biased Linear from C × the mel bins left
      (``num_mel_bins // stride^stages``) into the width.
    - Each block: two feed-forwards (h → intermediate → h); q/k/v/o, the bias-free ``relative_k_proj`` and the
      ``bias_u``/``bias_v`` of heads × head_dim; the conv module (pointwise h → 2h, depthwise of
      ``conv_kernel_size``, a BatchNorm whose running mean and variance the checkpoint holds, pointwise h → h);
      five LayerNorms.
    - The projection: an RMSNorm over h, then h → ``projection_hidden_size`` → the text width, biased with
      ``projection_bias``.
    """
    if sound_config.get("projection_hidden_size") is None:
        return None
    encoder = int_fields(sound_config, _ENCODER_DEFAULTS)
    h, layers, heads = encoder["hidden_size"], encoder["num_hidden_layers"], encoder["num_attention_heads"]
    inner, kernel = encoder["intermediate_size"], encoder["conv_kernel_size"]
    head_dim = int(sound_config.get("head_dim") or h // heads)
    attention = heads * head_dim
    channels, stride = encoder["subsampling_conv_channels"], encoder["subsampling_conv_stride"]
    conv_kernel = encoder["subsampling_conv_kernel_size"] ** 2
    stages = int(math.log2(encoder["subsampling_factor"]))
    mel_left = encoder["num_mel_bins"] // stride**stages
    subsampling = channels * conv_kernel + channels
    subsampling += (stages - 1) * (channels * conv_kernel + channels + channels * channels + channels)
    subsampling += h  # the Linear's bias
    # The conv module's depthwise conv, its BatchNorm's weight, bias, running mean and variance, and (with
    # convolution_bias) the three convs' biases.
    conv_vectors = h * kernel + 4 * h + (2 * h + h + h if sound_config.get("convolution_bias", True) else 0)
    block_vectors = conv_vectors + 2 * attention + _BLOCK_LAYER_NORMS * 2 * h
    projection_hidden = int(sound_config["projection_hidden_size"])
    projection_bias = projection_hidden + text_hidden if sound_config.get("projection_bias") else 0
    shapes = [
        LinearShape("audio.subsampling.linear", "vision", channels * mel_left, h, 1),
        LinearShape("audio.feed_forward.linear1", "vision", h, inner, 2 * layers),
        LinearShape("audio.feed_forward.linear2", "vision", inner, h, 2 * layers),
        LinearShape("audio.self_attn.q_k_v_o_relative_k", "vision", h, attention, 5 * layers),
        LinearShape("audio.conv.pointwise_conv1", "vision", h, 2 * h, layers),
        LinearShape("audio.conv.pointwise_conv2", "vision", h, h, layers),
        LinearShape("audio.projection.linear1", "vision", h, projection_hidden, 1),
        LinearShape("audio.projection.linear2", "vision", projection_hidden, text_hidden, 1),
    ]
    return shapes, subsampling + layers * block_vectors + h + projection_bias
