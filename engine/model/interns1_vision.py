"""InternVL's transformers-format checkpoints (``internvl``) and Intern-S1 (``interns1``): the vision tower and
projector as vLLM's interns1.py and interns1_vit.py build them."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import with_defaults
from engine.model.intern_vit import intern_vit_blocks
from engine.model.linear_shape import LinearShape

# transformers' InternVLVisionConfig defaults, for keys a vision_config leaves out.
_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "intermediate_size": 4096,
    "attention_bias": False,
    "use_qk_norm": False,
    "norm_type": "layer_norm",
    "image_size": [448, 448],
    "patch_size": [14, 14],
    "num_channels": 3,
    "use_mask_token": False,
    "use_absolute_position_embeddings": True,
    "use_mean_pooling": True,
}


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, list | tuple) else (int(value), int(value))


def interns1_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """InternS1VisionModel (every ``num_hidden_layers`` layer) and InternS1MultiModalProjector.

    The embeddings: a class token, a mask token with ``use_mask_token``, a biased Conv2d patch projection and, with
    ``use_absolute_position_embeddings``, a position per patch and the class token. A layer: q/k/v (biased with
    ``attention_bias``), q/k RMSNorms with ``use_qk_norm``, a biased projection_layer, a biased fc1 / fc2 MLP, two
    norms (RMSNorm or LayerNorm by ``norm_type``) and the layer scales lambda_1 / lambda_2; a final LayerNorm
    unless ``use_mean_pooling``. The projector: a LayerNorm over the pixel-shuffled width (hidden ·
    int(1 / ``downsample_ratio``)²) and two biased Linears into the text width. Only the tower's MLP is built with
    the quantization config (q/k/v and projection_layer are nn.Linear).
    """
    vision = with_defaults(config.get("vision_config") or {}, _VISION_DEFAULTS)
    h, layers, inner = (
        int(vision["hidden_size"]),
        int(vision["num_hidden_layers"]),
        int(vision["intermediate_size"]),
    )
    (image_h, image_w), (patch_h, patch_w) = _pair(vision["image_size"]), _pair(vision["patch_size"])
    channels = int(vision["num_channels"])
    # InternVisionEncoderLayer's weights (q/k/v are three Linears here, the same size as its fused qkv); only the
    # vision.mlp.* shapes are quantized.
    shapes, layer_vectors = intern_vit_blocks(
        h,
        inner,
        layers,
        qkv_bias=bool(vision["attention_bias"]),
        qk_normalization=bool(vision["use_qk_norm"]),
        layer_norm=vision["norm_type"] == "layer_norm",
    )
    shapes.append(LinearShape("vision.patch_embedding", "vision", channels * patch_h * patch_w, h, 1))
    patches = (image_h // patch_h) * (image_w // patch_w)
    embeddings = h + (h if vision["use_mask_token"] else 0) + h  # class token, mask token, patch bias
    embeddings += (patches + 1) * h if vision["use_absolute_position_embeddings"] else 0
    final_norm = 0 if vision["use_mean_pooling"] else 2 * h
    shuffled = h * int(1 / float(config.get("downsample_ratio") or 0.5)) ** 2
    shapes += [
        LinearShape("multi_modal_projector.linear_1", "vision", shuffled, text_hidden, 1),
        LinearShape("multi_modal_projector.linear_2", "vision", text_hidden, text_hidden, 1),
    ]
    projector = 2 * shuffled + text_hidden + text_hidden
    return shapes, layer_vectors + embeddings + final_norm + projector
