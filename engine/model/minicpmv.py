"""MiniCPM-V (``minicpmv``) as vLLM's minicpmv.py builds it per version: its language model, tower and resampler."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import first_key
from engine.model.linear_shape import LinearShape
from engine.model.vit_towers import SIGLIP_MODEL_TYPE, vit_tower_shapes

# The versions whose tower is Idefics2VisionTransformer and resampler Resampler2_5 (4.5: Resampler4_5, the same
# parameters and a non-persistent temporal table). 2.0's tower is timm's, not read here.
_READ_VERSIONS = {(2, 5), (2, 6), (4, 0), (4, 5)}
_SIGLIP_LAYERS = 12  # SiglipVisionConfig's default
# The language model each version's init_llm builds: MiniCPMForCausalLM, Llama, Qwen2, Llama, Qwen3.
_LANGUAGE_MODEL_TYPES: dict[tuple[int, ...], str] = {
    (2, 0): "minicpm",
    (2, 5): "llama",
    (2, 6): "qwen2",
    (4, 0): "llama",
    (4, 5): "qwen3",
}


def minicpmv_version(config: dict[str, Any]) -> tuple[int, ...]:
    """minicpmv.py's get_version_by_config: ``version``, else 2.0 for a 2304-wide model with 64 queries, else 2.5."""
    version = config.get("version")
    if version is None:
        return (2, 0) if config.get("hidden_size") == 2304 and config.get("query_num") == 64 else (2, 5)
    try:
        return tuple(int(part) for part in str(version).split("."))
    except ValueError:  # not a number: vLLM cannot build it either
        return ()


def minicpmv_language_model_type(config: dict[str, Any]) -> str:
    """The model type whose rules the version's language model follows (its q/k/v biases, q/k norms)."""
    return _LANGUAGE_MODEL_TYPES.get(minicpmv_version(config), "minicpmv")


def minicpmv_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int] | None:
    """The tower (``vpm``) and resampler, both with the quant config; None for a version not read here.

    The tower is SigLIP's layout with its post_layernorm, less its last block with ``drop_vision_last_layer``. The
    resampler: ``query_num`` learned queries of the text width, a bias-free kv_proj from the tower's width (the one
    Linear), an nn.MultiheadAttention (biased in_proj and out_proj), ln_q, ln_kv, ln_post and a square ``proj``
    Parameter; vLLM builds none but kv_proj with the quant config, so those are counted 16-bit.
    """
    if minicpmv_version(config) not in _READ_VERSIONS:
        return None
    vision = dict(config["vision_config"])
    if config.get("drop_vision_last_layer"):
        vision["num_hidden_layers"] = int(first_key(vision, "num_hidden_layers", default=_SIGLIP_LAYERS)) - 1
    tower, vectors, h = vit_tower_shapes({**config, "vision_config": vision}, SIGLIP_MODEL_TYPE)
    e, queries = text_hidden, int(first_key(config, "query_num", default=64))
    kv_proj = [LinearShape("multi_modal_projector.kv_proj", "vision", h, e, 1)] if h != e else []
    vectors += queries * e + (3 * e * e + 3 * e) + (e * e + e) + 3 * 2 * e + e * e
    return [*tower, *kv_proj], vectors
