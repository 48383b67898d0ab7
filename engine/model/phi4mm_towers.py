"""Phi-4-multimodal's (``phi4mm``) image encoder and audio embedding as vLLM's phi4mm.py and phi4mm_audio.py build
them, none with the quantization config."""

from __future__ import annotations

import math
from typing import Any

from engine.model.linear_shape import LinearShape
from engine.model.vit_towers import SIGLIP_MODEL_TYPE, vit_tower_shapes

# get_navit_vision_model's fixed SigLIP-so400m (patch 14 at 448), whatever the config says.
_NAVIT_LAYERS = 27
_NAVIT = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": _NAVIT_LAYERS}
_NAVIT |= {"image_size": 448, "patch_size": 14}
# ConformerEncoder's defaults for the keys that change its parameters.
_CONFORMER_DEFAULTS = {"depthwise_multiplier": 1, "ext_pw_kernel_size": 1, "time_reduction": 4}
_NEMO_CONV_CHANNELS = 256
_T5_MAX_DISTANCE = 1000
_NEMO_KERNEL, _NEMO_STRIDE = 3, 2  # dw_striding's convolutions


def _image_encoder(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """Phi4MMImageEncoder: the NaViT SigLIP (Idefics2VisionTransformer, no post_layernorm) to
    ``img_processor.layer_idx`` (default -2: 26 of 27 layers), glb_GN and sub_GN, and img_projection (1152 →
    text width → text width, biased)."""
    processor = config.get("img_processor")
    layer_idx = int(processor.get("layer_idx", -2)) if isinstance(processor, dict) else -2
    layers = _NAVIT_LAYERS + layer_idx + 1 if layer_idx < 0 else layer_idx + 1
    tower_config = {"model_type": "phi4mm", "vision_config": _NAVIT}
    shapes, vectors, h = vit_tower_shapes(tower_config, SIGLIP_MODEL_TYPE, layers_override=layers)
    shapes += [
        LinearShape("vision.img_projection.0", "vision", h, text_hidden, 1),
        LinearShape("vision.img_projection.2", "vision", text_hidden, text_hidden, 1),
    ]
    return shapes, vectors + 2 * h + 2 * text_hidden


def _conv_module(encoder: dict[str, Any], d: int) -> int:
    """ConvModule's parameters: a LayerNorm; with ``ext_pw_out_channel`` E, a Conv1d d → E and the GLU's d → 2E
    (kernel ``ext_pw_kernel_size``, biased; b1 / b2 of E with ``bias_in_glu``), and a Linear E → d where E ≠ d;
    else three pw_conv_simplify weights and biases; a BatchNorm with ``batch_norm``; the depthwise conv (d ·
    ``depthwise_multiplier`` channels, ``kernel_size``) and the pointwise one to ``depthwise_seperable_out_channel``
    S, both biased, and a Linear S → d where S ≠ d (without S, d · multiplier → d where the multiplier ≠ 1)."""
    ext = int(encoder.get("ext_pw_out_channel") or 0)
    kernel = int(encoder.get("ext_pw_kernel_size", _CONFORMER_DEFAULTS["ext_pw_kernel_size"]))
    multiplier = int(encoder.get("depthwise_multiplier", _CONFORMER_DEFAULTS["depthwise_multiplier"]))
    separable = int(encoder.get("depthwise_seperable_out_channel") or 0)
    params = 2 * d
    if ext:
        params += d * ext * kernel + ext + d * 2 * ext * kernel + 2 * ext
        params += 2 * ext if encoder.get("bias_in_glu", True) else 0
        params += ext * d + d if ext != d else 0
    else:
        params += 6
    params += 4 * d if encoder.get("batch_norm") else 0
    hidden = d * multiplier
    params += hidden * int(encoder["kernel_size"]) + hidden
    if separable:
        params += hidden * separable + separable + (separable * d + d if separable != d else 0)
    elif multiplier != 1:
        params += hidden * d + d
    return params


def _conformer(encoder: dict[str, Any]) -> tuple[list[LinearShape], int] | None:
    """ConformerEncoder with its NeMo dw_striding input layer; None for a layout vLLM does not build or quant-tui
    has not read (another input layer or bias type, grouped attention, a GLU Linear in the conv module).

    The input layer: ``log2(time_reduction)`` stages of ``conv_channels`` C (a 1 → C 3 × 3 conv, then a depthwise
    and a pointwise one a stage, all biased) and a biased Linear from C × the mel bins left into
    ``attention_dim`` d. A block: two feed-forwards (a LayerNorm, the GLU's biased d → 2 · ``linear_units`` and a
    biased linear_units → d), biased q/k/v/out, the conv module, two LayerNorms. Then T5 relative-position biases
    (2 · ``t5_bias_max_distance`` rows, or max_distance with ``t5_bias_symmetric``, of one per head) and the
    global mean and inverse deviation of ``encoder_embedding_config``'s ``input_size`` mel bins.
    """
    bias = encoder.get("relative_attention_bias_args") or {}
    unread = (
        encoder.get("input_layer", "nemo_conv") != "nemo_conv"
        or bias.get("type") != "t5"
        or int(encoder.get("attention_group_size") or 1) != 1
        or encoder.get("linear_glu_in_convm")
        or (encoder.get("nemo_conv_settings") or {}).get("subsampling", "dw_striding") != "dw_striding"
    )
    if unread:
        return None
    d, units, blocks = int(encoder["attention_dim"]), int(encoder["linear_units"]), int(encoder["num_blocks"])
    heads, mels = int(encoder["attention_heads"]), int(encoder["input_size"])
    channels = int((encoder.get("nemo_conv_settings") or {}).get("conv_channels") or _NEMO_CONV_CHANNELS)
    stages = int(math.log2(int(encoder.get("time_reduction", _CONFORMER_DEFAULTS["time_reduction"]))))
    left = mels
    for _ in range(stages):
        left = (left + 2 * ((_NEMO_KERNEL - 1) // 2) - _NEMO_KERNEL) // _NEMO_STRIDE + 1
    kernel_area = _NEMO_KERNEL * _NEMO_KERNEL
    subsampling = channels * kernel_area + channels
    subsampling += (stages - 1) * (channels * kernel_area + channels + channels * channels + channels)
    distance = int(bias.get("t5_bias_max_distance", _T5_MAX_DISTANCE))
    rows = distance if bias.get("t5_bias_symmetric") else 2 * distance
    shapes = [
        LinearShape("audio.embed.out", "vision", channels * left, d, 1),
        LinearShape("audio.feed_forward.glu", "vision", d, 2 * units, 2 * blocks),
        LinearShape("audio.feed_forward.out", "vision", units, d, 2 * blocks),
        LinearShape("audio.self_attn.qkvo", "vision", d, d, 4 * blocks),
    ]
    block = 2 * (2 * d + 2 * units + d) + 4 * d + _conv_module(encoder, d) + 2 * 2 * d
    normalized = int((encoder.get("encoder_embedding_config") or {}).get("input_size") or mels)
    return shapes, subsampling + d + blocks * block + rows * heads + 2 * normalized


def _audio_embedding(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int] | None:
    """AudioEmbedding: the ``cascades`` ConformerEncoder and its projection, an ``mlp`` (two, speech and the
    one for vision-with-speech: d → text width → text width, biased) or a ``linear`` (d → text width); None for a
    Q-Former or conv-downsampling embedding, which quant-tui has not read."""
    processor = config.get("audio_processor") or {}
    embedding = (config.get("embd_layer") or {}).get("audio_embd_layer") or {}
    if (
        processor.get("name") != "cascades"
        or embedding.get("use_qformer")
        or embedding.get("use_conv_downsample")
    ):
        return None
    encoder = _conformer(processor["config"])
    if encoder is None:
        return None
    shapes, vectors = encoder
    d, rate = int(processor["config"]["attention_dim"]), int(embedding.get("downsample_rate", 1))
    if embedding.get("projection_cls", "linear") == "linear":
        return [
            *shapes,
            LinearShape("audio.audio_projection", "vision", d, text_hidden, 1),
        ], vectors + text_hidden
    projections = [
        LinearShape("audio.audio_projection.0", "vision", d * rate, text_hidden, 2),
        LinearShape("audio.audio_projection.2", "vision", text_hidden, text_hidden, 2),
    ]
    return shapes + projections, vectors + 2 * 2 * text_hidden


def phi4mm_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int] | None:
    """Phi4MMForCausalLM's vision_encoder and embed_tokens_extend (the LLM is LlamaModel); None where the audio
    embedding is a layout quant-tui has not read."""
    audio = _audio_embedding(config, text_hidden)
    if audio is None:
        return None
    image_shapes, image_vectors = _image_encoder(config, text_hidden)
    return image_shapes + audio[0], image_vectors + audio[1]
