"""The LLaVA-family wrappers vLLM builds around a vision tower: their config defaults, tower depth and projector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.model.linear_shape import LinearShape


@dataclass(frozen=True, slots=True)
class LlavaDefaults:
    """What transformers' config class of one LLaVA-family ``model_type`` assumes where config.json is silent."""

    vision_model_type: str
    vision_feature_layer: int
    projector_bias: bool
    # vLLM's image_newline Parameter (llava_next.py, llava_onevision.py): one text-width vector.
    image_newline: bool = False
    # llava_onevision.py builds its projector of nn.Linear: never quantized, its weights stay 16-bit.
    projector_quantizable: bool = True


# LlavaConfig, LlavaNextConfig, LlavaNextVideoConfig, LlavaOnevisionConfig and Mistral3Config (transformers 4.5x).
# llava_next_video.py builds no image_newline (it skips the checkpoint's) and a projector of nn.Linear.
LLAVA_FAMILY: dict[str, LlavaDefaults] = {
    "llava": LlavaDefaults("clip_vision_model", -2, True),
    "llava_next": LlavaDefaults("clip_vision_model", -2, True, image_newline=True),
    "llava_next_video": LlavaDefaults("clip_vision_model", -2, True, projector_quantizable=False),
    "llava_onevision": LlavaDefaults(
        "siglip_vision_model", -1, True, image_newline=True, projector_quantizable=False
    ),
    "mistral3": LlavaDefaults("pixtral", -1, False),
}


def vision_model_type(config: dict[str, Any]) -> str:
    """The vision tower's ``model_type``, the family's default where ``vision_config`` leaves it out."""
    vision = config.get("vision_config") or {}
    family = LLAVA_FAMILY.get(str(config.get("model_type")))
    return str(vision.get("model_type") or (family.vision_model_type if family else ""))


def layers_built(config: dict[str, Any], layers: int) -> int:
    """vLLM's ``_get_num_hidden_layers`` (llava.py, mistral3.py): the tower is built up to its deepest feature layer.

    ``get_layer_index`` maps a negative feature layer ``i`` to ``layers + i + 1``; outside the LLaVA family every
    layer is built.
    """
    family = LLAVA_FAMILY.get(str(config.get("model_type")))
    if family is None:
        return layers
    feature = config.get("vision_feature_layer", family.vision_feature_layer)
    indices = feature if isinstance(feature, list) else [feature]
    return max(layers + int(i) + 1 if int(i) < 0 else int(i) for i in indices)


def projector_bias(config: dict[str, Any]) -> bool:
    """``multimodal_projector_bias``, the family's default where config.json leaves it out."""
    family = LLAVA_FAMILY.get(str(config.get("model_type")))
    return bool(config.get("multimodal_projector_bias", family.projector_bias if family else True))


def llava_projector_shapes(config: dict[str, Any], h: int, text_hidden: int) -> tuple[list[LinearShape], int]:
    """vLLM's LlavaMultiModalProjector (linear_1 from the tower's width, linear_2), and the image_newline vector.

    Where the family builds the projector of ``nn.Linear`` its weights are returned as vectors (16-bit).
    """
    family = LLAVA_FAMILY.get(str(config.get("model_type")))
    shapes = [
        LinearShape("multi_modal_projector.linear_1", "vision", h, text_hidden, 1),
        LinearShape("multi_modal_projector.linear_2", "vision", text_hidden, text_hidden, 1),
    ]
    vectors = 2 * text_hidden if projector_bias(config) else 0
    if family is not None and family.image_newline:
        vectors += text_hidden
    if family is not None and not family.projector_quantizable:
        return [], vectors + sum(shape.numel for shape in shapes)
    return shapes, vectors
