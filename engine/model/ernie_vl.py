"""ERNIE-4.5-VL (``ernie4_5_moe_vl``) as vLLM's ernie45_vl.py and ernie45_vl_moe.py build it: the vision experts
beside the text ones, the DFN vision tower and the resampler."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import first_key, int_fields
from engine.model.linear_shape import LinearShape

ERNIE_VL_MODEL_TYPE = "ernie4_5_moe_vl"
# The remote-code vision config class's defaults (Qwen2-VL's DFN tower), for keys a vision_config leaves out.
_VISION_DEFAULTS = {"depth": 32, "embed_dim": 1280, "patch_size": 14, "in_channels": 3}
_MLP_RATIO = 4.0
_CONV_SIZE = 2  # spatial_conv_size and temporal_conv_size


def _vision_pair(text: dict[str, Any], key: str, default: int) -> int:
    value = text.get(key)
    return int(value[1]) if isinstance(value, list) and len(value) > 1 else default


def ernie_vl_vision_experts(
    text: dict[str, Any], hidden: int, moe_layers: int
) -> tuple[list[LinearShape], int]:
    """Ernie4_5_VLMoeMoE's vision experts in ``moe_layers`` layers: ``moe_num_experts[1]`` experts
    ``moe_intermediate_size[1]`` wide (gate/up and down, built with the quantization config), their fp32 router
    h × experts, and the vision row of the (2, experts) ``e_score_correction_bias`` (the text row is the text
    experts'). The layers are taken to be the text experts' (every real config's vision range covers them).
    """
    experts = _vision_pair(text, "moe_num_experts", 0)
    width = _vision_pair(text, "moe_intermediate_size", 0)
    if not experts or not width or not moe_layers:
        return [], 0
    shapes = [
        LinearShape("mlp.vision_experts.gate_up_proj", "experts", hidden, 2 * width, moe_layers * experts),
        LinearShape("mlp.vision_experts.down_proj", "experts", width, hidden, moe_layers * experts),
        LinearShape("mlp.vision_experts_gate", "router", hidden, experts, moe_layers),
    ]
    return shapes, moe_layers * experts


def ernie_vl_tower_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """Ernie4_5_VisionTransformer (with the quantization config) and VariableResolutionResamplerModel (its
    Linears take the HF config's ``quant_config`` attribute, which no config sets: 16-bit).

    The tower: a bias-free Linear patch embedding over ``in_channels · patch²``, ``depth`` blocks of a biased
    fused qkv, proj, fc1 / fc2 (``embed_dim · mlp_ratio``) and two LayerNorms, rotary positions (no table), and a
    final LayerNorm. The resampler over ``pixel_hidden_size`` × ``spatial_conv_size``² = S: spatial_linear1 /
    spatial_linear2 S → S and a LayerNorm; with ``use_temporal_conv`` (default True) temporal_linear1 from S ×
    ``temporal_conv_size`` and temporal_linear2 S → S and a LayerNorm; ``mlp`` S → the text width; all biased; an
    RMSNorm after.
    """
    vision = int_fields(config.get("vision_config") or {}, _VISION_DEFAULTS)
    d, layers, patch = vision["embed_dim"], vision["depth"], vision["patch_size"]
    inner = int(d * float((config.get("vision_config") or {}).get("mlp_ratio") or _MLP_RATIO))
    shapes = [
        LinearShape("vision.patch_embedding", "vision", vision["in_channels"] * patch * patch, d, 1),
        LinearShape("vision.attn.qkv", "vision", d, 3 * d, layers),
        LinearShape("vision.attn.proj", "vision", d, d, layers),
        LinearShape("vision.mlp.fc1", "vision", d, inner, layers),
        LinearShape("vision.mlp.fc2", "vision", inner, d, layers),
    ]
    vectors = layers * (3 * d + d + inner + d + 4 * d) + 2 * d
    spatial = (
        int(first_key(config, "pixel_hidden_size", default=d))
        * int(first_key(config, "spatial_conv_size", default=_CONV_SIZE)) ** 2
    )
    shapes += [LinearShape("resampler.spatial_linear", "vision", spatial, spatial, 2)]
    vectors += 2 * spatial + 2 * spatial
    if config.get("use_temporal_conv", True):
        temporal = spatial * int(first_key(config, "temporal_conv_size", default=_CONV_SIZE))
        shapes += [
            LinearShape("resampler.temporal_linear1", "vision", temporal, spatial, 1),
            LinearShape("resampler.temporal_linear2", "vision", spatial, spatial, 1),
        ]
        vectors += 2 * spatial + 2 * spatial
    shapes.append(LinearShape("resampler.mlp", "vision", spatial, text_hidden, 1))
    return shapes, vectors + text_hidden + text_hidden
