"""Parameters of a multimodal model's vision tower and projector, from its ``vision_config``."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import first_key
from engine.model.glm4v_tower import GLM4V_MODEL_TYPES, glm4v_shapes
from engine.model.intern_vit import INTERNVL_MODEL_TYPES, intern_vit_shapes
from engine.model.linear_shape import LinearShape
from engine.model.llava_family import llava_projector_shapes, vision_model_type
from engine.model.vision_towers import (
    QWEN3_VL_MODEL_TYPES,
    QWEN_VL_MODEL_TYPES,
    mistral3_projector_shapes,
    pixtral_tower_shapes,
    qwen3_vl_shapes,
    qwen_vl_shapes,
)
from engine.model.vit_towers import IDEFICS3_MODEL_TYPES, VIT_MODEL_TYPES, idefics3_shapes, vit_tower_shapes


def vision_tower_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """The vision tower and projector vLLM builds; by default a ViT (biased attention, two-layer MLP, LayerNorms)."""
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        return [], 0
    model_type = str(config.get("model_type"))
    if model_type in QWEN_VL_MODEL_TYPES:
        return qwen_vl_shapes(config)
    if model_type in QWEN3_VL_MODEL_TYPES:
        return qwen3_vl_shapes(config)
    if model_type in INTERNVL_MODEL_TYPES:
        return intern_vit_shapes(config, text_hidden)
    if model_type in IDEFICS3_MODEL_TYPES:
        return idefics3_shapes(config, text_hidden)
    if model_type in GLM4V_MODEL_TYPES:
        return glm4v_shapes(config)
    tower_type = vision_model_type(config) or ("siglip_vision_model" if model_type == "gemma3" else "")
    if tower_type == "pixtral":
        tower, tower_vectors = pixtral_tower_shapes(config)
        h = int(vision.get("hidden_size") or 1024)
    elif tower_type in VIT_MODEL_TYPES:
        tower, tower_vectors, h = vit_tower_shapes(config, tower_type)
    else:
        return _generic_vit_shapes(config, vision, text_hidden)
    if model_type == "mistral3":
        projector, projector_vectors = mistral3_projector_shapes(config, text_hidden)
    elif model_type == "gemma3":  # one projection Parameter after a soft-embedding RMSNorm
        projector = [LinearShape("multi_modal_projector.mm_input_projection", "vision", h, text_hidden, 1)]
        projector_vectors = h
    else:
        projector, projector_vectors = llava_projector_shapes(config, h, text_hidden)
    return tower + projector, tower_vectors + projector_vectors


def _generic_vit_shapes(
    config: dict[str, Any], vision: dict[str, Any], text_hidden: int
) -> tuple[list[LinearShape], int]:
    """A ViT quant-tui has not read in vLLM (and Llama 4's), with a LLaVA-style or Llama 4 projector."""
    h = int(first_key(vision, "hidden_size", "embed_dim", "width", default=0))
    if not h:
        return [], 0
    layers = int(first_key(vision, "num_hidden_layers", "depth", "num_layers", default=0))
    inner = int(first_key(vision, "intermediate_size", default=4 * h))
    patch = int(first_key(vision, "patch_size", default=14))
    channels = int(first_key(vision, "num_channels", "in_channels", default=3))
    image = int(first_key(vision, "image_size", default=0))
    shapes = [
        LinearShape("vision.attn.qkvo", "vision", h, h, 4 * layers),
        LinearShape("vision.mlp.fc1", "vision", h, inner, layers),
        LinearShape("vision.mlp.fc2", "vision", inner, h, layers),
        LinearShape("vision.patch_embedding", "vision", channels * patch * patch, h, 1),
    ]
    vectors = layers * (4 * h + inner + h + 4 * h)  # biases and two LayerNorms per block
    positions = (image // patch) ** 2 + 1 if image else 0
    vectors += positions * h + h + 4 * h  # position and class embeddings, pre/post LayerNorms
    projector_in = int(first_key(vision, "projector_input_dim", default=0))
    if not projector_in:
        projector, projector_vectors = llava_projector_shapes(config, h, text_hidden)
        return shapes + projector, vectors + projector_vectors
    # Llama 4: pixel-shuffle MLP, then one projection into the text model
    ratio = float(vision.get("pixel_shuffle_ratio") or 0.5)
    shuffled = int(h / (ratio * ratio))
    out = int(first_key(vision, "projector_output_dim", default=projector_in))
    shapes += [
        LinearShape("vision_adapter.mlp.fc1", "vision", shuffled, projector_in, 1),
        LinearShape("vision_adapter.mlp.fc2", "vision", out, out, 1),
        LinearShape(
            "multi_modal_projector.linear_1",
            "vision",
            int(vision.get("vision_output_dim") or out),
            text_hidden,
            1,
        ),
    ]
    return shapes, vectors


# Where vLLM 0.32's multimodal models build their vision part with the quantization config, by model_type:
# (the tower's prefix, the projector's), None where it is built without it. llava.py, llava_next.py and
# mistral3.py give both vision_tower and multi_modal_projector quant_config; llava_onevision.py, internvl.py
# and gemma3_mm.py their vision tower (the projectors are nn.Linear and a Parameter); mllama4.py both
# quant_config=None; idefics3.py (and smolvlm.py) both, its projector being connector.modality_projection; the
# Qwen-VL and GLM-4V towers ("visual") hold their merger, which quant-tui sizes as the projector.
_VISION_BUILDS: dict[str, tuple[str | None, str | None]] = {
    "llava": ("vision_tower", "multi_modal_projector"),
    "llava_next": ("vision_tower", "multi_modal_projector"),
    "llava_onevision": ("vision_tower", None),
    "internvl_chat": ("vision_model", None),
    "idefics3": ("vision_model", "connector"),
    "smolvlm": ("vision_model", "connector"),
    "mistral3": ("vision_tower", "multi_modal_projector"),
    "gemma3": ("vision_tower", None),
    "llama4": (None, None),
    "glm4v": ("visual", "visual"),
    "glm4v_moe": ("visual", "visual"),
    "qwen2_vl": ("visual", "visual"),
    "qwen2_5_vl": ("visual", "visual"),
    "qwen3_vl": ("visual", "visual"),
    "qwen3_vl_moe": ("visual", "visual"),
}


# gemma4_mm.py::Gemma4ForConditionalGeneration builds the vision tower, embed_vision, the audio tower and
# embed_audio with one tower_quant, every nn.Linear in the towers (the patch embedder's input_proj too) swapped for
# a ReplicatedLinear with it (recursive_replace_linear); gemma4_unified.py gives quant_config to vision_embedder's
# patch_dense only, its embed_vision / embed_audio to none.
_GEMMA4_BUILDS = (
    ("vision.", "vision_tower"),
    ("embed_vision.", "embed_vision"),
    ("audio.", "audio_tower"),
    ("embed_audio.", "embed_audio"),
)
_GEMMA4_UNIFIED_BUILDS = (("vision_embedder.", "vision_embedder"),)
# tower_quant is the checkpoint's config for these methods (QuantizationConfig.get_name()) whatever the sizes; for
# the others (Marlin, FP8 kernels want multiples of 64) only when the vision hidden and intermediate sizes both are.
_GEMMA4_ANY_SIZE_METHODS = {"bitsandbytes", "torchao", "compressed-tensors"}
# transformers' Gemma4VisionConfig defaults, for a vision_config that leaves them out.
_GEMMA4_VISION_WIDTHS = (768, 3072)


def _gemma4_towers_quantized(config: dict[str, Any], method: str) -> bool:
    if method in _GEMMA4_ANY_SIZE_METHODS:
        return True
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        return False  # vLLM cannot build a Gemma 4 without one
    hidden = int(vision.get("hidden_size") or _GEMMA4_VISION_WIDTHS[0])
    inner = int(vision.get("intermediate_size") or _GEMMA4_VISION_WIDTHS[1])
    return hidden % 64 == 0 and inner % 64 == 0


def vision_read(config: dict[str, Any]) -> bool:
    """Whether quant-tui sizes this model's towers as vLLM's model file builds them (not as a generic ViT)."""
    return quantizable_vision(str(config.get("model_type"))) is not None


def quantizable_vision(
    model_type: str, config: dict[str, Any] | None = None, method: str = ""
) -> tuple[tuple[str, str], ...] | None:
    """(quant-tui's vision shape prefix, vLLM's module prefix) pairs vLLM builds with the quantization config.

    ``vision.`` is the tower (a ViT's patch embedding is a convolution, never quantized; Gemma 4's is a Linear),
    ``multi_modal_projector.`` and ``vision_adapter.`` the projector. Gemma 4's choice depends on ``config`` (its
    vision sizes) and ``method``, vLLM's name of the quantization method (``compressed-tensors``, ``fp8``,
    ``modelopt``...). None for a model type quant-tui has not read in vLLM.
    """
    if model_type == "gemma4_unified":
        return _GEMMA4_UNIFIED_BUILDS
    if model_type == "gemma4":
        return _GEMMA4_BUILDS if _gemma4_towers_quantized(config or {}, method) else ()
    build = _VISION_BUILDS.get(model_type)
    if build is None:
        return None
    tower, projector = build
    pairs = [("vision.", tower)] if tower else []
    if projector:
        pairs += [("multi_modal_projector.", projector), ("vision_adapter.", projector)]
    return tuple(pairs)
