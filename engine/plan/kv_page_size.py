"""vLLM's page-size unification: the largest KV page of a model's layers and each layer kind's block size."""

from __future__ import annotations

from engine.model.architecture import AttentionLayout, LayerAttention


def largest_page_bytes_per_token(
    attention: AttentionLayout, kv_dtype_bytes: float, tensor_parallel_size: int = 1
) -> int:
    """Bytes per token of the largest attention page, which every layer's page is unified to."""
    kinds = {attention.layer_kinds[i] for i in range(len(attention.layer_kinds)) if attention.caches_kv(i)}
    sizes = [attention.bytes_per_token_of(kind, kv_dtype_bytes, tensor_parallel_size) for kind in kinds]
    return max(sizes, default=attention.bytes_per_token_per_layer(kv_dtype_bytes, tensor_parallel_size))


def kind_block_size(
    attention: AttentionLayout, kind: LayerAttention, block_size: int, tensor_parallel_size: int = 1
) -> int:
    """vLLM's ``unify_kv_cache_spec_page_size``: a kind whose page divides the largest gets that many
    times the block size; the largest page's kind, linear layers and a page that does not divide
    (padded instead) keep ``block_size``. The dtype cancels out of the ratio."""
    if kind in ("linear", "none"):
        return block_size
    largest = largest_page_bytes_per_token(attention, 1, tensor_parallel_size)
    own = attention.bytes_per_token_of(kind, 1, tensor_parallel_size)
    return block_size * (largest // own) if own and largest % own == 0 else block_size
