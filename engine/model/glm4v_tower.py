"""GLM-4.1V and GLM-4.5V's vision part (``glm4v``, ``glm4v_moe``) as vLLM's glm4_1v.py builds it."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import int_fields
from engine.model.linear_shape import LinearShape

# Glm4vVisionConfig's defaults (= Glm4vMoeVisionConfig's) in transformers, for keys a config.json leaves out.
_VISION_DEFAULTS: dict[str, int] = {
    "hidden_size": 1536,
    "depth": 24,
    "intermediate_size": 13696,
    "out_hidden_size": 4096,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "in_channels": 3,
    "image_size": 336,
    "spatial_merge_size": 2,
}


def glm4v_shapes(config: dict[str, Any]) -> tuple[list[LinearShape], int]:
    """Glm4vVisionTransformer (``visual``, built with the quantization config, its merger inside).

    A biased Conv3d patch embedding over ``temporal_patch_size`` frames and ``post_conv_layernorm``; a learned
    position per patch of ``image_size``; ``depth`` blocks of bias-free qkv and proj and a bias-free gated MLP
    whose width is ``out_hidden_size`` (not ``intermediate_size``), with two RMSNorms; ``post_layernorm``; a
    biased Conv2d ``downsample`` over ``spatial_merge_size``² patches into ``out_hidden_size`` (a convolution:
    16-bit vectors here); the merger: a bias-free proj, a LayerNorm, and a gated MLP of ``intermediate_size``.
    """
    vision = int_fields(config["vision_config"], _VISION_DEFAULTS)
    h, depth, out, inner = (
        vision["hidden_size"],
        vision["depth"],
        vision["out_hidden_size"],
        vision["intermediate_size"],
    )
    patch, merge = vision["patch_size"], vision["spatial_merge_size"]
    shapes = [
        LinearShape(
            "vision.patch_embedding",
            "vision",
            vision["in_channels"] * vision["temporal_patch_size"] * patch**2,
            h,
            1,
        ),
        LinearShape("vision.attn.qkv", "vision", h, 3 * h, depth),
        LinearShape("vision.attn.proj", "vision", h, h, depth),
        LinearShape("vision.mlp.gate_up_proj", "vision", h, 2 * out, depth),
        LinearShape("vision.mlp.down_proj", "vision", out, h, depth),
        LinearShape("multi_modal_projector.merger.proj", "vision", out, out, 1),
        LinearShape("multi_modal_projector.merger.gate_up_proj", "vision", out, 2 * inner, 1),
        LinearShape("multi_modal_projector.merger.down_proj", "vision", inner, out, 1),
    ]
    # The patch bias, post_conv_layernorm and positions; the downsample conv; norm1/2 a block, post_layernorm and
    # the merger's LayerNorm.
    embeddings = h + h + (vision["image_size"] // patch) ** 2 * h
    downsample = h * merge * merge * out + out
    vectors = embeddings + downsample + depth * 2 * h + h + 2 * out
    return shapes, vectors
