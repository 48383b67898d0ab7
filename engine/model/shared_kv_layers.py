"""Layers whose KV cache differs from the rest: Gemma 4's full-attention heads, Gemma 3n / 4's KV-sharing layers."""

from __future__ import annotations

from typing import Any

from engine.model.config_class_defaults import GEMMA3N_TEXT_MODEL_TYPES, GEMMA4_TEXT_MODEL_TYPES

# Families whose last ``num_kv_shared_layers`` layers reuse an earlier layer's KV cache
# (vLLM's Gemma3nAttention / Gemma4Attention set ``kv_sharing_target_layer_name``).
KV_SHARING_MODEL_TYPES = GEMMA3N_TEXT_MODEL_TYPES | GEMMA4_TEXT_MODEL_TYPES
# transformers' Gemma4TextConfig.__post_init__: ``global_head_dim`` defaults to 512.
GEMMA4_GLOBAL_HEAD_DIM = 512


def kv_shared_layers(text: dict[str, Any], model_type: str, num_layers: int) -> tuple[int, ...]:
    """The decoder layers that allocate no KV cache of their own, in order.

    vLLM 0.32 (gemma4.py::Gemma4Attention, gemma3n.py::Gemma3nAttention): the layers from
    ``num_hidden_layers - num_kv_shared_layers`` on read the cache of the last earlier layer of their
    type; GPUModelRunner.get_kv_cache_spec gives them no KVCacheSpec, so no page is allocated.
    """
    shared = int(text.get("num_kv_shared_layers") or 0)
    if model_type not in KV_SHARING_MODEL_TYPES or shared <= 0:
        return ()
    return tuple(range(max(0, num_layers - shared), num_layers))


def gemma4_full_attention(text: dict[str, Any], model_type: str, kv_heads: int) -> tuple[int, int]:
    """``(KV heads, head size)`` of Gemma 4's full-attention layers; ``(0, 0)`` for other families.

    transformers' Gemma4TextConfig gives each full-attention layer a ``per_layer_config`` override:
    ``head_dim`` = ``global_head_dim`` (512 unless set), ``num_key_value_heads`` =
    ``num_global_key_value_heads`` where ``attention_k_eq_v`` (else the model's); vLLM's
    Gemma4DecoderLayer reads ``config.per_layer_config[layer_idx]``. A config.json that carries
    ``per_layer_config`` itself (keyed by layer index) is read as it stands.
    """
    if model_type not in GEMMA4_TEXT_MODEL_TYPES:
        return 0, 0
    layer_types = list(text.get("layer_types") or [])
    full = [index for index, name in enumerate(layer_types) if name == "full_attention"]
    per_layer = text.get("per_layer_config")
    if isinstance(per_layer, dict) and full:
        override = per_layer.get(str(full[0])) or per_layer.get(full[0]) or {}
        heads = int(override.get("num_key_value_heads") or kv_heads)
        return heads, int(override.get("head_dim") or text.get("head_dim") or 0)
    heads = kv_heads
    if text.get("attention_k_eq_v") and text.get("num_global_key_value_heads") is not None:
        heads = int(text["num_global_key_value_heads"])
    return heads, int(text.get("global_head_dim") or GEMMA4_GLOBAL_HEAD_DIM)


def with_gemma4_defaults(text: dict[str, Any], model_type: str, num_layers: int) -> dict[str, Any]:
    """Gemma 4's config with what transformers' Gemma4TextConfig fills in when config.json leaves it out.

    ``layer_types``: five sliding layers to one full (``sliding_window_pattern`` 6), the last layer
    forced to full; ``sliding_window`` 512.
    """
    if model_type not in GEMMA4_TEXT_MODEL_TYPES:
        return text
    names = list(text.get("layer_types") or [])
    if not names:
        names = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(num_layers)]
    if names:
        names[-1] = "full_attention"
    return {**text, "layer_types": names, "sliding_window": text.get("sliding_window") or 512}


def kv_shared_weight_prefixes(layers: tuple[int, ...]) -> tuple[str, ...]:
    """Name prefixes of the KV-sharing layers' k_proj / v_proj / k_norm tensors, which vLLM drops at load.

    vLLM 0.32's gemma4.py::_gemma4_layer_weights_mapper and gemma3n.py::_kv_sharing_weights_mapper map
    ``layers.{i}.self_attn.{k_proj,v_proj,k_norm}.`` to None for those layers ("the K/V tensors
    original checkpoints still ship for them are dropped"); the layers build q_proj, o_proj and q_norm
    only. Roots as checkpoints spell them: ``model.language_model.`` (the multimodal wrapper's),
    ``model.`` (text-only), none.
    """
    roots = ("model.language_model.", "model.", "")
    parts = ("k_proj", "v_proj", "k_norm")
    return tuple(
        f"{root}layers.{index}.self_attn.{part}." for index in layers for root in roots for part in parts
    )
