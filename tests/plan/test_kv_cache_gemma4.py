"""Gemma 4's KV cache: full layers with their own head size and KV heads, KV-sharing layers without a cache.

vLLM 0.32: gemma4.py::Gemma4DecoderLayer reads ``config.per_layer_config[layer_idx]`` (transformers'
Gemma4TextConfig: full-attention layers get ``global_head_dim``, and ``num_global_key_value_heads``
where ``attention_k_eq_v``); Gemma4Attention gives the last ``num_kv_shared_layers`` layers a
``kv_sharing_target_layer_name``, and GPUModelRunner.get_kv_cache_spec skips those layers;
kv_cache_utils.unify_kv_cache_spec_page_size raises the smaller page's block size. No published
Gemma 4 config was at hand: the configs here are made up, every figure worked by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import read_architecture
from engine.plan.kv_cache import kv_bytes_per_token, kv_capacity_for
from engine.plan.kv_page_size import kind_block_size

SLIDING, FULL = "sliding_attention", "full_attention"
# 12 layers, full at 5 and 11; the last 4 (8-11) read layers 7 (sliding) and 5 (full)'s caches.
LAYER_TYPES = [SLIDING] * 5 + [FULL] + [SLIDING] * 5 + [FULL]
GEMMA4: dict[str, Any] = {
    "architectures": ["Gemma4ForCausalLM"],
    "model_type": "gemma4_text",
    "hidden_size": 1536,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "global_head_dim": 512,
    "layer_types": LAYER_TYPES,
    "sliding_window": 512,
    "num_kv_shared_layers": 4,
    "intermediate_size": 6144,
    "vocab_size": 262144,
}


def _attention(**overrides: Any) -> Any:
    return read_architecture({**GEMMA4, **overrides}, Path(".")).attention


# overrides, tensor parallel, KV bytes per token (bf16); own caches: sliding 0-4, 6, 7 and full 5.
BYTES_PER_TOKEN = [
    # sliding 1 head × (256 + 256) × 2 B = 1024; full 1 × 2 × 512 × 2 = 2048: 7 × 1024 + 2048.
    ({}, 1, 9_216),
    # Gemma 4 Unified's text_config type builds the same Gemma4ForCausalLM (gemma4_unified.py).
    ({"model_type": "gemma4_unified_text"}, 1, 9_216),
    # without sharing all 12: 10 × 1024 + 2 × 2048.
    ({"num_kv_shared_layers": 0}, 1, 14_336),
    # k_eq_v: sliding 4 heads × 512 × 2 = 4096, full num_global_key_value_heads 1 × 1024 × 2 = 2048.
    ({"num_key_value_heads": 4, "attention_k_eq_v": True, "num_global_key_value_heads": 1}, 1, 30_720),
    # TP 2: sliding 2 heads → 2048, full max(1, 1 // 2) = 1 head → 2048: 8 × 2048.
    ({"num_key_value_heads": 4, "attention_k_eq_v": True, "num_global_key_value_heads": 1}, 2, 16_384),
    # num_global_key_value_heads is read only with attention_k_eq_v: full 4 × 1024 × 2 = 8192.
    ({"num_key_value_heads": 4, "num_global_key_value_heads": 1}, 1, 7 * 4_096 + 8_192),
    # global_head_dim unset: transformers' 512.
    ({"global_head_dim": None}, 1, 9_216),
    # layer_types and sliding_window unset: transformers' 5 sliding to 1 full (full at 5, 11) and 512.
    ({"layer_types": None, "sliding_window": None}, 1, 9_216),
    # per_layer_config in the file: full layers 2 heads × 2 × 512 × 2 = 4096: 7 × 1024 + 4096.
    ({"per_layer_config": {"5": {"head_dim": 512, "num_key_value_heads": 2}}}, 1, 11_264),
]


@pytest.mark.parametrize(("overrides", "tensor_parallel", "expected"), BYTES_PER_TOKEN)
def test_kv_bytes_per_token(overrides: dict[str, Any], tensor_parallel: int, expected: int) -> None:
    assert kv_bytes_per_token(_attention(**overrides), 2, tensor_parallel) == expected


def test_the_last_layer_is_forced_to_full() -> None:
    attention = _attention(layer_types=[SLIDING] * 5 + [FULL] + [SLIDING] * 6)
    assert (attention.layer_kinds[5], attention.layer_kinds[-1], attention.count("full")) == (
        "full",
        "full",
        2,
    )


def test_other_families_keep_one_head_shape() -> None:
    # A Gemma-3-style config: no global_head_dim reading, no KV sharing key honoured.
    attention = _attention(model_type="gemma3_text", num_kv_shared_layers=4)
    assert (attention.full_head_size, attention.kv_shared_layers) == (0, ())
    assert kv_bytes_per_token(attention, 2) == 12 * 1_024


def test_the_smaller_page_gets_a_larger_block() -> None:
    attention = _attention()
    assert attention.kv_shared_layers == (8, 9, 10, 11)
    # full page 2048 B/token is twice the sliding 1024: sliding blocks hold 32 tokens, full 16.
    assert (kind_block_size(attention, "sliding", 16), kind_block_size(attention, "full", 16)) == (32, 16)
    # Groups: sliding 7 layers, full 1 (7 >= 1.5 × 1): group size 1, 8 groups. One request of 4096
    # tokens, 2048 in flight: sliding min(511 + 2048, 4096) = 2559 tokens → ceil(2559 / 32) + 1 = 81
    # blocks in each of 7 groups, full ceil(4096 / 16) = 256: 823. A block: 1 layer × 16 × 2048 B =
    # 32,768; 1 GiB holds 32,768 blocks, 32,768 / 823 = 39.815 requests.
    capacity = kv_capacity_for(attention, 1 << 30, 4096, 16, 2, 2048)
    assert (capacity.blocks_per_request, capacity.bytes_per_block, capacity.num_blocks) == (
        823,
        32_768,
        32_768,
    )
    assert capacity.logged_concurrency == "39.82"
    assert [group.kind for group in capacity.groups] == ["sliding"] * 7 + ["full"]


def test_summary_names_the_full_heads_and_the_sharing() -> None:
    assert _attention().description == (
        "MQA 1 KV head × 256, layers: 10 sliding (512) + 2 full, full layers 1 KV heads × 512,"
        " 4 reuse earlier layers' KV"
    )
