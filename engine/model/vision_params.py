"""Parameters of a multimodal model's towers and projector, and which of them vLLM quantizes, by ``model_type``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.model.config_json import first_key, thinker_section
from engine.model.ernie_vl import ERNIE_VL_MODEL_TYPE, ernie_vl_tower_shapes
from engine.model.gemma3n_towers import gemma3n_shapes
from engine.model.gemma4_towers import gemma4_tower_shapes
from engine.model.glm4v_tower import glm4v_shapes
from engine.model.intern_vit import intern_vit_shapes
from engine.model.interns1_vision import interns1_shapes
from engine.model.lfm2_vl_towers import lfm2_vl_shapes
from engine.model.linear_shape import LinearShape
from engine.model.llama4_vision import llama4_vision_shapes
from engine.model.llava_family import llava_projector_shapes, vision_model_type
from engine.model.minicpmv import minicpmv_shapes
from engine.model.moonvit_towers import kimi_vl_shapes, moonvit_3d_shapes
from engine.model.ovis_towers import ovis2_5_shapes
from engine.model.phi3v_tower import phi3v_shapes
from engine.model.phi4mm_towers import phi4mm_shapes
from engine.model.qwen_audio_towers import qwen2_5_omni_shapes, qwen2_audio_shapes, qwen3_omni_shapes
from engine.model.radio_towers import radio_shapes
from engine.model.vision_towers import (
    mistral3_projector_shapes,
    pixtral_tower_shapes,
    qwen3_vl_shapes,
    qwen_vl_shapes,
)
from engine.model.vit_towers import VIT_MODEL_TYPES, idefics3_shapes, vit_blocks, vit_tower_shapes

Shapes = tuple[list[LinearShape], int]
# (quant-tui's shape prefix, vLLM's module prefix) pairs that vLLM builds with the quantization config.
PrefixPairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class TowersRead:
    """How vLLM 0.32's model file of one multimodal ``model_type`` builds its towers and projector.

    ``shapes`` gives None where the config names a tower this file builds but quant-tui has not read. ``tower``
    and ``projector`` are vLLM's module prefixes where they are built with the quantization config (None where
    they are not); ``quantized`` replaces them where that depends on the config and method (Gemma 4).
    """

    shapes: Callable[[dict[str, Any], int], Shapes | None]
    tower: str | None = None
    projector: str | None = None
    quantized: Callable[[dict[str, Any], str], PrefixPairs] | None = None
    # Gemma 4 counts an audio tower without a vision_config; the others have nothing without one.
    needs_vision_config: bool = True


def _tower_only(shapes: Callable[[dict[str, Any]], Shapes]) -> Callable[[dict[str, Any], int], Shapes]:
    """A tower function whose merger is its own output projection: the text width does not enter."""
    return lambda config, _text_hidden: shapes(config)


def _llava_family_shapes(config: dict[str, Any], text_hidden: int) -> Shapes | None:
    """A CLIP, SigLIP or Pixtral tower (llava.py, llava_next.py, llava_next_video.py, llava_onevision.py,
    mistral3.py, gemma3_mm.py, paligemma.py) and the family's projector; None for another tower type."""
    model_type = str(config.get("model_type"))
    vision = config["vision_config"]
    siglip_only = model_type in {"gemma3", "paligemma"}
    tower_type = vision_model_type(config) or ("siglip_vision_model" if siglip_only else "")
    if tower_type == "pixtral":
        tower, tower_vectors = pixtral_tower_shapes(config)
        h = int(vision.get("hidden_size") or 1024)
    elif tower_type in VIT_MODEL_TYPES:
        tower, tower_vectors, h = vit_tower_shapes(config, tower_type)
    else:
        return None
    if model_type == "mistral3":
        projector, projector_vectors = mistral3_projector_shapes(config, text_hidden)
    elif model_type == "paligemma":
        # an nn.Linear with a bias into projection_dim (PaliGemmaConfig's default 2048)
        projection = int(config.get("projection_dim") or 2048)
        projector, projector_vectors = [], h * projection + projection
    elif model_type == "gemma3":  # one projection Parameter after a soft-embedding RMSNorm
        projector = [LinearShape("multi_modal_projector.mm_input_projection", "vision", h, text_hidden, 1)]
        projector_vectors = h
    else:
        projector, projector_vectors = llava_projector_shapes(config, h, text_hidden)
    return tower + projector, tower_vectors + projector_vectors


def _generic_vit_shapes(
    config: dict[str, Any], vision: dict[str, Any], text_hidden: int
) -> tuple[list[LinearShape], int]:
    """A ViT of a model type quant-tui has not read in vLLM, with a LLaVA-style projector."""
    h = int(first_key(vision, "hidden_size", "embed_dim", "width", default=0))
    if not h:
        return [], 0
    layers = int(first_key(vision, "num_hidden_layers", "depth", "num_layers", default=0))
    inner = int(first_key(vision, "intermediate_size", default=4 * h))
    patch = int(first_key(vision, "patch_size", default=14))
    channels = int(first_key(vision, "num_channels", "in_channels", default=3))
    image = int(first_key(vision, "image_size", default=0))
    shapes, vectors = vit_blocks(h, inner, layers)
    shapes.append(LinearShape("vision.patch_embedding", "vision", channels * patch * patch, h, 1))
    positions = (image // patch) ** 2 + 1 if image else 0
    vectors += positions * h + h + 4 * h  # position and class embeddings, pre/post LayerNorms
    projector, projector_vectors = llava_projector_shapes(config, h, text_hidden)
    return shapes + projector, vectors + projector_vectors


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


def _gemma4_builds(config: dict[str, Any], method: str) -> PrefixPairs:
    if method in _GEMMA4_ANY_SIZE_METHODS:
        return _GEMMA4_BUILDS
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        return ()  # vLLM cannot build a Gemma 4 without one
    hidden = int(vision.get("hidden_size") or _GEMMA4_VISION_WIDTHS[0])
    inner = int(vision.get("intermediate_size") or _GEMMA4_VISION_WIDTHS[1])
    return _GEMMA4_BUILDS if hidden % 64 == 0 and inner % 64 == 0 else ()


# kimi_k25.py and Kimi K3's model give vision_tower and mm_projector the checkpoint's quant_config, except a
# compressed-tensors one (_maybe_ignore_quant_config): Kimi-K2.5's INT4 checkpoint keeps both 16-bit.
_KIMI_3D_BUILDS = (("vision.", "vision_tower"), ("multi_modal_projector.", "mm_projector"))


def _kimi_3d_builds(_config: dict[str, Any], method: str) -> PrefixPairs:
    return () if method == "compressed-tensors" else _KIMI_3D_BUILDS


_KIMI_3D = TowersRead(moonvit_3d_shapes, quantized=_kimi_3d_builds, needs_vision_config=False)
_LLAVA_FAMILY = TowersRead(_llava_family_shapes, "vision_tower", "multi_modal_projector")
_IDEFICS3 = TowersRead(idefics3_shapes, "vision_model", "connector")
_GLM4V = TowersRead(_tower_only(glm4v_shapes), "visual", "visual")
_QWEN_VL = TowersRead(_tower_only(qwen_vl_shapes), "visual", "visual")
_RADIO = TowersRead(radio_shapes)
# interns1.py: InternS1VisionModel with quant_config, which only its MLP's parallel Linears take; the projector is
# nn.Linear.
_INTERNS1 = TowersRead(interns1_shapes, quantized=lambda _config, _method: (("vision.mlp.", "vision_tower"),))
_OVIS2_5 = TowersRead(ovis2_5_shapes, "visual_tokenizer.vit", needs_vision_config=False)
_QWEN3_VL = TowersRead(_tower_only(qwen3_vl_shapes), "visual", "visual")
# The model types whose vLLM 0.32 file quant-tui has read. llava.py, llava_next.py and mistral3.py give both
# vision_tower and multi_modal_projector quant_config; llava_next_video.py, llava_onevision.py, internvl.py,
# gemma3_mm.py and paligemma.py their vision tower (the projectors are nn.Linear and a Parameter); mllama4.py both
# quant_config=None; idefics3.py (and smolvlm.py) both, its projector being connector.modality_projection; the Qwen-VL
# towers (qwen3_5.py's too) and GLM-4V's ("visual") hold their merger, which quant-tui sizes as the projector;
# kimi_vl.py builds its MoonViT and projector without quant_config; minicpmv.py its vpm and resampler with it. The
# Kimi and Omni models build their towers from their config classes' defaults where the config has no sub-config for
# them.
_TOWERS_READ: dict[str, TowersRead] = {
    "llava": _LLAVA_FAMILY,
    "llava_next": _LLAVA_FAMILY,
    "llava_next_video": TowersRead(_llava_family_shapes, "vision_tower"),
    "llava_onevision": TowersRead(_llava_family_shapes, "vision_tower"),
    "mistral3": _LLAVA_FAMILY,
    "gemma3": TowersRead(_llava_family_shapes, "vision_tower"),
    "paligemma": TowersRead(_llava_family_shapes, "vision_tower"),
    "internvl_chat": TowersRead(intern_vit_shapes, "vision_model"),
    "internvl": _INTERNS1,  # InternVLForConditionalGeneration: transformers' format, built by interns1.py
    "interns1": _INTERNS1,
    "idefics3": _IDEFICS3,
    "smolvlm": _IDEFICS3,
    "llama4": TowersRead(llama4_vision_shapes),
    # lfm2_vl.py: Siglip2Model with quant_config; the projector's ReplicatedLinears without. "lfm2-vl" is the
    # model type of the first (remote-code) LFM2-VL configs.
    "lfm2_vl": TowersRead(lfm2_vl_shapes, "vision_tower"),
    "lfm2-vl": TowersRead(lfm2_vl_shapes, "vision_tower"),
    "minicpmv": TowersRead(minicpmv_shapes, "vpm", "resampler"),
    # nano_nemotron_vl.py: RadioModel and mlp1 without quant_config (the Omni model types build the same class).
    "NemotronH_Nano_VL_V2": _RADIO,
    "NemotronH_Nano_Omni_Reasoning_V3": _RADIO,
    "NemotronH_Super_Omni_Reasoning_V3": _RADIO,
    "NemotronH_Omni_Reasoning_V3": _RADIO,
    # ovis2_5.py: Siglip2NavitModel with quant_config, the visual head and the vte without.
    "ovis2_5": _OVIS2_5,
    # phi4mm.py: a fixed NaViT SigLIP and the conformer audio embedding, neither with quant_config.
    "phi4mm": TowersRead(phi4mm_shapes, needs_vision_config=False),
    # phi3v.py: a fixed CLIP from img_processor, with quant_config; the projection is nn.Linear.
    "phi3_v": TowersRead(phi3v_shapes, "vision_embed_tokens.img_processor", needs_vision_config=False),
    "kimi_vl": TowersRead(kimi_vl_shapes, needs_vision_config=False),
    "kimi_k25": _KIMI_3D,
    "kimi_k3": _KIMI_3D,
    "glm4v": _GLM4V,
    "glm4v_moe": _GLM4V,
    "qwen2_vl": _QWEN_VL,
    "qwen2_5_vl": _QWEN_VL,
    # qwen2_5_omni_thinker.py: the Qwen2.5-VL tower with quant_config, the audio tower (transformers') without;
    # qwen3_omni_moe_thinker.py the same way round.
    "qwen2_5_omni": TowersRead(qwen2_5_omni_shapes, "visual", "visual", needs_vision_config=False),
    "qwen3_omni_moe": TowersRead(qwen3_omni_shapes, "visual", "visual", needs_vision_config=False),
    "qwen2_audio": TowersRead(qwen2_audio_shapes, needs_vision_config=False),  # no quant_config for either
    # ernie45_vl.py: the vision tower with quant_config; the resampler with the HF config's (unset) quant_config.
    ERNIE_VL_MODEL_TYPE: TowersRead(ernie_vl_tower_shapes, "vision_model"),
    "qwen3_vl": _QWEN3_VL,
    "qwen3_vl_moe": _QWEN3_VL,
    "qwen3_5": _QWEN3_VL,
    "qwen3_5_moe": _QWEN3_VL,
    # gemma3n_mm.py: transformers' towers (AutoModel) and the embedders, none with quant_config.
    "gemma3n": TowersRead(gemma3n_shapes, needs_vision_config=False),
    "gemma4": TowersRead(gemma4_tower_shapes, quantized=_gemma4_builds, needs_vision_config=False),
    "gemma4_unified": TowersRead(
        gemma4_tower_shapes,
        quantized=lambda _config, _method: _GEMMA4_UNIFIED_BUILDS,
        needs_vision_config=False,
    ),
}


def _read_shapes(config: dict[str, Any], text_hidden: int) -> Shapes | None:
    """The towers as vLLM's file for this model type builds them; None where quant-tui has not read it."""
    read = _TOWERS_READ.get(str(config.get("model_type")))
    if read is None:
        return None
    if read.needs_vision_config and not isinstance(config.get("vision_config"), dict):
        return [], 0
    return read.shapes(config, text_hidden)


def vision_tower_shapes(config: dict[str, Any], text_hidden: int) -> Shapes:
    """The towers and projector vLLM builds; for a model type not read here, a generic ViT with a LLaVA projector."""
    read = _read_shapes(config, text_hidden)
    if read is not None:
        return read
    vision = config.get("vision_config")
    return _generic_vit_shapes(config, vision, text_hidden) if isinstance(vision, dict) else ([], 0)


def has_towers(config: dict[str, Any]) -> bool:
    """Whether the config describes a vision or audio tower: at its top (Phi-3-Vision's ``img_processor``,
    Phi-4-multimodal's ``audio_processor``, Ovis's ``vit_config``) or in an Omni model's thinker_config."""
    return any(
        isinstance(section.get(key), dict)
        for section in (config, thinker_section(config))
        for key in ("vision_config", "audio_config", "img_processor", "audio_processor", "vit_config")
    )


def vision_read(config: dict[str, Any]) -> bool:
    """Whether quant-tui sizes this model's towers as vLLM's model file builds them (not as a generic ViT)."""
    return _read_shapes(config, 0) is not None


def quantizable_vision(
    model_type: str, config: dict[str, Any] | None = None, method: str = ""
) -> PrefixPairs | None:
    """(quant-tui's vision shape prefix, vLLM's module prefix) pairs vLLM builds with the quantization config.

    ``vision.`` is the tower (a ViT's patch embedding is a convolution, never quantized; Gemma 4's is a Linear),
    ``multi_modal_projector.`` and ``vision_adapter.`` the projector. Gemma 4's choice depends on ``config`` (its
    vision sizes) and ``method``, vLLM's name of the quantization method (``compressed-tensors``, ``fp8``,
    ``modelopt``...). None for a model type quant-tui has not read in vLLM.
    """
    read = _TOWERS_READ.get(model_type)
    if read is None:
        return None
    if read.quantized is not None:
        return read.quantized(config or {}, method)
    pairs = [("vision.", read.tower)] if read.tower else []
    if read.projector:
        pairs += [("multi_modal_projector.", read.projector), ("vision_adapter.", read.projector)]
    return tuple(pairs)
