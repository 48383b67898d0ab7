"""Where decoder layers differ in shape: per-layer MLP widths, Gemma 4's full-attention heads, KV-sharing layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.model.architecture import Architecture
from engine.model.config_class_defaults import GEMMA3N_TEXT_MODEL_TYPES, GEMMA4_TEXT_MODEL_TYPES

# transformers' Gemma4TextConfig and Gemma3nTextConfig: hidden_size_per_layer_input defaults to 256 (per-layer
# embeddings).
PER_LAYER_INPUT_DEFAULT = 256
_PER_LAYER_INPUT_MODEL_TYPES = GEMMA4_TEXT_MODEL_TYPES | GEMMA3N_TEXT_MODEL_TYPES


@dataclass(frozen=True, slots=True)
class AttentionVariant:
    """One layer's attention shape.

    Attributes:
        kv_heads: KV heads of its k/v projections.
        head_dim: its heads' size.
        kv_shared: it reads an earlier layer's KV cache: q_proj, o_proj and q_norm only (vLLM's
            Gemma4Attention / Gemma3nAttention build no k/v projection for it).
    """

    kv_heads: int
    head_dim: int
    kv_shared: bool = False


def attention_variant(arch: Architecture, index: int) -> AttentionVariant:
    """Layer ``index``'s attention shape: Gemma 4's full layers have their own heads (``per_layer_config``)."""
    layout = arch.attention
    kind = layout.layer_kinds[index] if index < len(layout.layer_kinds) else "full"
    heads, dim = arch.num_kv_heads, arch.head_dim
    if kind == "full" and layout.full_head_size:
        heads, dim = layout.full_num_kv_heads or heads, layout.full_head_size
    return AttentionVariant(heads, dim, index in layout.kv_shared_layers)


def mlp_width(arch: Architecture, index: int, default: int) -> int:
    """Layer ``index``'s dense MLP width.

    A per-layer ``intermediate_size`` list (Gemma 3n: vLLM's Gemma3nDecoderLayer reads
    ``config.intermediate_size[layer_idx]``) gives it; Gemma 4's ``use_double_wide_mlp`` doubles it in
    the KV-sharing layers (Gemma4DecoderLayer); else ``default``.
    """
    widths = arch.text.get("intermediate_size")
    width = int(widths[index]) if isinstance(widths, list) and index < len(widths) else default
    double = arch.model_type in GEMMA4_TEXT_MODEL_TYPES and arch.text.get("use_double_wide_mlp")
    return 2 * width if double and index in arch.attention.kv_shared_layers else width


def per_layer_input_size(text: dict[str, Any], model_type: str) -> int:
    """Gemma 4's and Gemma 3n's per-layer-embedding width (``hidden_size_per_layer_input``, 0 without)."""
    if model_type not in _PER_LAYER_INPUT_MODEL_TYPES:
        return 0
    value = text.get("hidden_size_per_layer_input", PER_LAYER_INPUT_DEFAULT)
    return int(value or 0)
