"""LFM2-VL's SigLIP2 NaFlex tower and projector (``lfm2_vl``) as vLLM's lfm2_vl.py and lfm2_siglip2.py build them."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import first_key, int_fields
from engine.model.linear_shape import LinearShape
from engine.model.vit_towers import vit_blocks

# transformers' Siglip2VisionConfig defaults, for keys a config.json leaves out.
_VISION_DEFAULTS: dict[str, int] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_channels": 3,
    "patch_size": 16,
    "num_patches": 256,
}
# transformers' Lfm2VlConfig defaults.
_PROJECTOR_HIDDEN, _DOWNSAMPLE = 2560, 2


def lfm2_vl_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """Siglip2Model (tower) and Lfm2VLMultiModalProjector.

    The tower is built with the quantization config: blocks of a fused biased qkv_proj and out_proj, biased
    fc1 / fc2 and two LayerNorms, then ``post_layernorm`` (the whole tower is built); its patch embedding is a
    biased Linear over ``num_channels · patch²`` pixels (ReplicatedLinear without the quantization config) and
    it learns one position per patch (``num_patches``). The projector (ReplicatedLinears without it) pixel-
    unshuffles ``downsample_factor``² patches, LayerNorms them when ``projector_use_layernorm`` (default True),
    and projects through ``linear_1`` (``projector_hidden_size``) and ``linear_2`` into the text width, both
    biased with ``projector_bias`` (default True).
    """
    vision = int_fields(config["vision_config"], _VISION_DEFAULTS)
    h, inner, layers = vision["hidden_size"], vision["intermediate_size"], vision["num_hidden_layers"]
    patch = vision["patch_size"]
    factor = int(first_key(config, "downsample_factor", default=_DOWNSAMPLE))
    projector_in = h * factor * factor
    projector_hidden = int(first_key(config, "projector_hidden_size", default=_PROJECTOR_HIDDEN))
    blocks, vectors = vit_blocks(h, inner, layers)
    shapes = [
        LinearShape("vision.patch_embedding", "vision", vision["num_channels"] * patch * patch, h, 1),
        *blocks,
        LinearShape("multi_modal_projector.linear_1", "vision", projector_in, projector_hidden, 1),
        LinearShape("multi_modal_projector.linear_2", "vision", projector_hidden, text_hidden, 1),
    ]
    vectors += h + vision["num_patches"] * h + 2 * h  # the patch embedding's bias, positions, post_layernorm
    if config.get("projector_use_layernorm", True):
        vectors += 2 * projector_in
    if config.get("projector_bias", True):
        vectors += projector_hidden + text_hidden
    return shapes, vectors
