"""Llama 4's vision model and projector (``llama4``) as vLLM's mllama4.py builds them."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import int_fields
from engine.model.linear_shape import LinearShape
from engine.model.vit_towers import vit_blocks

# Llama4VisionConfig's defaults in transformers, for keys a config.json leaves out.
_VISION_DEFAULTS: dict[str, int] = {
    "hidden_size": 768,
    "num_hidden_layers": 34,
    "num_channels": 3,
    "intermediate_size": 5632,
    "vision_output_dim": 7680,
    "image_size": 448,
    "patch_size": 14,
    "projector_input_dim": 4096,
    "projector_output_dim": 4096,
}


def llama4_vision_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """Llama4VisionModel and Llama4MultiModalProjector, both built with ``quant_config=None``.

    The patch embedding is an unfold and a bias-free Linear; a class embedding and a learned position per patch
    (and the class token's); ``layernorm_pre`` and ``layernorm_post``; blocks of biased qkv / o_proj and fc1 / fc2
    with two LayerNorms; the pixel-shuffle adapter's fc1 (from ``intermediate_size``, as vLLM builds it) and fc2,
    biased only with ``multi_modal_projector_bias``; the projector's bias-free ``linear_1`` into the text width.
    """
    raw = config["vision_config"]
    vision = int_fields(raw, _VISION_DEFAULTS)
    h, layers, inner = vision["hidden_size"], vision["num_hidden_layers"], vision["intermediate_size"]
    patch = vision["patch_size"]
    adapter_in, adapter_out = vision["projector_input_dim"], vision["projector_output_dim"]
    blocks, vectors = vit_blocks(h, inner, layers)
    shapes = [
        LinearShape("vision.patch_embedding", "vision", vision["num_channels"] * patch * patch, h, 1),
        *blocks,
        LinearShape("vision_adapter.mlp.fc1", "vision", inner, adapter_in, 1),
        LinearShape("vision_adapter.mlp.fc2", "vision", adapter_in, adapter_out, 1),
        LinearShape("multi_modal_projector.linear_1", "vision", vision["vision_output_dim"], text_hidden, 1),
    ]
    positions = (vision["image_size"] // patch) ** 2 + 1
    vectors += h + positions * h + 2 * 2 * h  # class embedding, positions, layernorm_pre and _post
    if bool(raw.get("multi_modal_projector_bias", False)):
        vectors += adapter_in + adapter_out
    return shapes, vectors
