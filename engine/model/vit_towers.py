"""CLIP and SigLIP vision towers as vLLM's clip.py, siglip.py and idefics2_vision_model.py build them (LLaVA, Gemma 3, Idefics3)."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import first_key
from engine.model.linear_shape import LinearShape
from engine.model.llava_family import LLAVA_FAMILY, layers_built

CLIP_MODEL_TYPE, SIGLIP_MODEL_TYPE = "clip_vision_model", "siglip_vision_model"
IDEFICS3_VISION_TYPE = "idefics3_vision"
# CLIPVisionConfig's, SiglipVisionConfig's and Idefics3VisionConfig's (= SmolVLMVisionConfig's) defaults:
# (hidden, intermediate, layers, image, patch).
_CONFIG_DEFAULTS = {
    CLIP_MODEL_TYPE: (768, 3072, 12, 224, 32),
    SIGLIP_MODEL_TYPE: (768, 3072, 12, 224, 16),
    IDEFICS3_VISION_TYPE: (1152, 3072, 12, 224, 32),
}
VIT_MODEL_TYPES = frozenset({CLIP_MODEL_TYPE, SIGLIP_MODEL_TYPE})


def vit_blocks(h: int, inner: int, layers: int) -> tuple[list[LinearShape], int]:
    """``layers`` ViT encoder blocks: biased q/k/v/out and fc1/fc2, two LayerNorms (CLIP, SigLIP, SigLIP2, Llama 4's).

    Returns the matrices and the blocks' vector parameters (the biases and LayerNorm weights and biases).
    """
    shapes = [
        LinearShape("vision.attn.qkvo", "vision", h, h, 4 * layers),
        LinearShape("vision.mlp.fc1", "vision", h, inner, layers),
        LinearShape("vision.mlp.fc2", "vision", inner, h, layers),
    ]
    return shapes, layers * (4 * h + inner + h + 2 * 2 * h)


def vit_tower_shapes(
    config: dict[str, Any], vision_type: str, layers_override: int | None = None
) -> tuple[list[LinearShape], int, int]:
    """(shapes, vectors, tower width) of a CLIP or SigLIP tower as vLLM builds it for ``config``.

    Both: ``layers`` blocks of biased q/k/v/out and fc1/fc2 with two LayerNorms, a Conv2d patch embedding and
    a learned position per patch. CLIP adds a class embedding (and its position), ``pre_layrnorm``, and a
    patch embedding without bias; SigLIP's patch embedding has one. The LLaVA family builds the tower only up
    to its feature layer and with ``require_post_norm=False``; Gemma 3 builds it whole, so ``post_layernorm``
    is there (vLLM drops it only for a truncated tower). ``layers_override``: the blocks another family's file
    builds, by its own rule (phi3v.py's from ``layer_idx``).
    """
    vision = config["vision_config"]
    hidden, inner, layers, image, patch = _CONFIG_DEFAULTS[vision_type]
    h = int(first_key(vision, "hidden_size", default=hidden))
    inner = int(first_key(vision, "intermediate_size", default=inner))
    total_layers = int(first_key(vision, "num_hidden_layers", default=layers))
    image = int(first_key(vision, "image_size", default=image))
    patch = int(first_key(vision, "patch_size", default=patch))
    channels = int(first_key(vision, "num_channels", default=3))
    built = layers_built(config, total_layers) if layers_override is None else layers_override
    shapes, vectors = vit_blocks(h, inner, built)
    shapes.append(LinearShape("vision.patch_embedding", "vision", channels * patch * patch, h, 1))
    patches = (image // patch) ** 2
    if vision_type == CLIP_MODEL_TYPE:
        vectors += h + (patches + 1) * h + 2 * h  # class embedding, positions, pre_layrnorm
    else:
        vectors += h + patches * h  # the patch embedding's bias, positions
    post_norm = str(config.get("model_type")) not in LLAVA_FAMILY and built == total_layers
    return shapes, vectors + (2 * h if post_norm else 0), h


def idefics3_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """Idefics3 and SmolVLM (idefics3.py, smolvlm.py): the tower and the connector, both with the quant config.

    The tower is Idefics2VisionTransformer, SigLIP's layout (a biased patch embedding, a position per patch,
    biased q/k/v/out and fc1/fc2, two LayerNorms a block), built whole with its ``post_layernorm``. The connector
    pixel-shuffles ``scale_factor``² patches into one and projects them with a bias-free ReplicatedLinear.
    """
    tower, vectors, h = vit_tower_shapes(config, IDEFICS3_VISION_TYPE)
    scale = int(first_key(config, "scale_factor", default=2))
    projection = LinearShape(
        "multi_modal_projector.modality_projection", "vision", h * scale * scale, text_hidden, 1
    )
    return [*tower, projection], vectors
