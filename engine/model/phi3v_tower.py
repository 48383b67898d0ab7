"""Phi-3-Vision and Phi-3.5-Vision (``phi3_v``) as vLLM's phi3v.py builds their image embedding."""

from __future__ import annotations

from typing import Any

from engine.model.linear_shape import LinearShape
from engine.model.vit_towers import CLIP_MODEL_TYPE, vit_tower_shapes

# phi3v.py's CLIP_VIT_LARGE_PATCH14_336_CONFIG: the tower is this CLIP whatever the config says.
_CLIP_L_336 = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "image_size": 336}
_CLIP_L_336 |= {"patch_size": 14, "num_channels": 3}


def phi3v_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """Phi3HDImageEmbedding: CLIP ViT-L/14-336 to ``img_processor.layer_idx`` (default -2) with the quant config, no
    post_layernorm; the glb_GN and sub_GN separators (4 × image_dim_out each); img_projection, two biased
    nn.Linear (4 × image_dim_out → text width → text width), never quantized."""
    processor = config.get("img_processor") or {}
    layer = int(processor.get("layer_idx", -2))
    # _init_img_processor: a negative layer_idx counts from the end; a non-negative one builds layer_idx + 1 blocks
    # (one more than llava.py's get_layer_index).
    total = _CLIP_L_336["num_hidden_layers"]
    built = total + layer + 1 if layer < 0 else layer + 1
    tower, vectors, _ = vit_tower_shapes(
        {"vision_config": _CLIP_L_336}, CLIP_MODEL_TYPE, layers_override=built
    )
    merged = 4 * int(processor.get("image_dim_out") or 1024)
    separators = 2 * merged
    projection = merged * text_hidden + text_hidden + text_hidden * text_hidden + text_hidden
    return tower, vectors + separators + projection
