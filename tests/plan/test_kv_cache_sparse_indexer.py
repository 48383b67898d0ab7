"""KV cache of DeepSeek Sparse Attention models (DeepSeek-V3.2, GLM-5) as vLLM 0.32 sizes it on a GPU.

vLLM 0.32 (vllm/models/deepseek_v32/attention.py, model_executor/models/deepseek_v2.py::
``DeepseekV32IndexerCache``): every layer with an indexer holds, beside its MLA latent
(``MLAAttentionSpec``, 576 elements of the KV dtype), a second ``MLAAttentionSpec`` of
``index_head_dim + index_head_dim // 128 × 4`` = 132 uint8 bytes per token, cache role "indexer".
The two do not merge (``MLAAttentionSpec.merge`` wants one cache role), but both are full attention,
so ``get_kv_cache_groups`` makes one ``UniformTypeKVCacheSpecs`` group of every page: one block
costs the sum of all pages (``_get_kv_cache_bytes_per_block``, layout LBNHC; the sparse backends'
stride alignments are whole 64-token pages, no padding) and a request ``cdiv(len, 64)`` blocks
(``UniformTypeKVCacheSpecs.max_memory_usage_bytes``). Block size 64: the sparse MLA backends take
multiples of 64 and the indexer backend exactly 64. Config: tests/fixtures/configs/deepseek-v3.2.json
(deepseek-ai/DeepSeek-V3.2's config.json, see tests/model/test_architecture_sparse_indexer.py).
Every figure is worked by hand in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import AttentionLayout, read_architecture
from engine.plan.kv_cache import block_size_for, kv_bytes_per_token, kv_capacity_for, sparse_mla_kv_dtype

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"
GIB = 1024**3
BUDGET = 40 * GIB  # 42,949,672,960 B of one H200/B200's KV space
IN_FLIGHT = 2 * 8192  # async scheduling: two batches of max_num_batched_tokens


def attention(changes: dict[str, Any] | None = None) -> AttentionLayout:
    config = json.loads((CONFIGS / "deepseek-v3.2.json").read_text())
    config.update(changes or {})
    return read_architecture(config, CONFIGS).attention


# GLM-5.2-shaped: 78 layers, IndexCache freq 4 / offset 3 (21 indexer layers, see the model test).
GLM52 = {
    "model_type": "glm_moe_dsa",
    "num_hidden_layers": 78,
    "index_topk_freq": 4,
    "index_skip_topk_offset": 3,
}

PER_TOKEN = [
    # id, changes, KV dtype bytes, tp, stage layers, bytes per token on one rank
    # 61 × (576 × 2 + 132) = 61 × 1,284 = 78,324 (the latent alone: 61 × 1,152 = 70,272).
    ("v3.2-bf16", {}, 2, 1, None, 78_324),
    # Latent and indexer are whole on every rank (max_tp_shards 1): TP 8 changes nothing.
    ("v3.2-bf16-tp8", {}, 2, 8, None, 78_324),
    # FP8 latent: 61 × (576 + 132) = 61 × 708 = 43,188.
    ("v3.2-fp8", {}, 1, 1, None, 43_188),
    # PP 2, first stage layers 0-30: 31 × 1,284 = 39,804.
    ("v3.2-pp-stage0", {}, 2, 1, range(0, 31), 39_804),
    # GLM-5.2 fp8 (vLLM's default on SM10x): 78 × 576 + 21 × 132 = 44,928 + 2,772 = 47,700.
    ("glm52-fp8", GLM52, 1, 1, None, 47_700),
]


@pytest.mark.parametrize(
    ("changes", "dtype_bytes", "tp", "stage", "expected"),
    [row[1:] for row in PER_TOKEN],
    ids=[row[0] for row in PER_TOKEN],
)
def test_bytes_per_token_count_the_indexer(
    changes: dict[str, Any], dtype_bytes: int, tp: int, stage: range | None, expected: int
) -> None:
    assert kv_bytes_per_token(attention(changes), dtype_bytes, tp, stage) == expected


CAPACITY = [
    # id, changes, KV dtype bytes, max_model_len, stage, bytes per block, blocks, per request, tokens, logged x
    # 64 × 78,324 = 5,012,736 B a block; 42,949,672,960 // 5,012,736 = 8,568 (8,568 × 5,012,736 =
    # 42,949,122,048, 550,912 left); 163,840 / 64 = 2,560 blocks a request; 8,568 / 2,560 = 3.346875;
    # 8,568 × 64 = 548,352 tokens. (Latent only it would be 9,549 blocks: 981 too many.)
    ("v3.2-bf16-160k", {}, 2, 163_840, None, 5_012_736, 8_568, 2_560, 548_352, "3.35"),
    # 32k requests: 512 blocks each; 8,568 / 512 = 16.734375; tokens the same 548,352.
    ("v3.2-bf16-32k", {}, 2, 32_768, None, 5_012_736, 8_568, 512, 548_352, "16.73"),
    # PP stage 0 (31 layers): 64 × 39,804 = 2,547,456; 42,949,672,960 // 2,547,456 = 16,859
    # (16,859 × 2,547,456 = 42,947,560,704, 2,112,256 left); 16,859 / 2,560 = 6.58555 → 1,078,976 tokens.
    ("v3.2-pp-stage0", {}, 2, 163_840, range(0, 31), 2_547_456, 16_859, 2_560, 1_078_976, "6.59"),
    # GLM-5.2 fp8: 64 × 47,700 = 3,052,800; 42,949,672,960 // 3,052,800 = 14,068 (14,068 × 3,052,800 =
    # 42,946,790,400, 2,882,560 left); 202,752 / 64 = 3,168 a request; 14,068 / 3,168 = 4.44065;
    # 14,068 × 64 = 900,352 tokens.
    ("glm52-fp8-198k", GLM52, 1, 202_752, None, 3_052_800, 14_068, 3_168, 900_352, "4.44"),
]


@pytest.mark.parametrize(
    ("changes", "dtype_bytes", "max_len", "stage", "per_block", "blocks", "per_request", "tokens", "logged"),
    [row[1:] for row in CAPACITY],
    ids=[row[0] for row in CAPACITY],
)
def test_capacity_sums_latent_and_indexer_pages(
    changes: dict[str, Any],
    dtype_bytes: int,
    max_len: int,
    stage: range | None,
    per_block: int,
    blocks: int,
    per_request: int,
    tokens: int,
    logged: str,
) -> None:
    layout = attention(changes)
    block = block_size_for(layout, cpu=False)
    assert block == 64
    capacity = kv_capacity_for(layout, BUDGET, max_len, block, dtype_bytes, IN_FLIGHT, 8, stage)
    assert capacity.bytes_per_block == per_block
    assert capacity.num_blocks == blocks
    assert capacity.blocks_per_request == per_request
    assert capacity.tokens == tokens
    assert capacity.logged_concurrency == logged
    assert len(capacity.groups) == 1  # one UniformTypeKVCacheSpecs group of latent + indexer pages


KV_DTYPES = [
    # id, model_type, --kv-cache-dtype, compute capability major, (dtype vLLM uses, bytes per element)
    ("v3.2-auto-h200", "deepseek_v32", "auto", 9, ("auto", None)),
    ("v3.2-auto-b200", "deepseek_v32", "auto", 10, ("auto", None)),
    # H200: FLASH_ATTN_MLA_SPARSE takes no fp8, FLASHMLA_SPARSE stores fp8_ds_mla: 656 B per latent.
    ("v3.2-fp8-h200", "deepseek_v32", "fp8", 9, ("fp8_ds_mla", 656 / 576)),
    # B200: FLASHINFER_MLA_SPARSE keeps plain fp8, one byte per element.
    ("v3.2-fp8-b200", "deepseek_v32", "fp8", 10, ("fp8", 1.0)),
    # GLM-5 on SM10x: "auto" becomes fp8_e4m3; on SM90 it stays.
    ("glm-auto-b200", "glm_moe_dsa", "auto", 10, ("fp8_e4m3", 1.0)),
    ("glm-auto-h200", "glm_moe_dsa", "auto", 9, ("auto", None)),
]


@pytest.mark.parametrize(
    ("model_type", "requested", "major", "expected"),
    [row[1:] for row in KV_DTYPES],
    ids=[row[0] for row in KV_DTYPES],
)
def test_sparse_mla_kv_dtype_follows_backend_choice(
    model_type: str, requested: str, major: int, expected: tuple[str, float | None]
) -> None:
    assert (
        sparse_mla_kv_dtype(attention({"model_type": model_type}), model_type, requested, major) == expected
    )


def test_dense_mla_keeps_its_kv_dtype() -> None:
    dense = read_architecture(json.loads((CONFIGS / "deepseek-v3.json").read_text()), CONFIGS).attention
    assert sparse_mla_kv_dtype(dense, "deepseek_v3", "fp8", 9) == ("fp8", None)


def test_fp8_ds_mla_capacity_on_h200() -> None:
    # 61 × (656 + 132) = 61 × 788 = 48,068 B a token; 64 × 48,068 = 3,076,352 B a block;
    # 42,949,672,960 // 3,076,352 = 13,961 (13,961 × 3,076,352 = 42,948,950,272, 722,688 left);
    # 13,961 / 2,560 = 5.4535; 13,961 × 64 = 893,504 tokens.
    layout = attention()
    _, element_bytes = sparse_mla_kv_dtype(layout, "deepseek_v32", "fp8", 9)
    assert element_bytes is not None
    assert kv_bytes_per_token(layout, element_bytes) == 48_068
    capacity = kv_capacity_for(layout, BUDGET, 163_840, 64, element_bytes, IN_FLIGHT, 8)
    assert (capacity.bytes_per_block, capacity.num_blocks, capacity.tokens) == (3_076_352, 13_961, 893_504)
    assert capacity.logged_concurrency == "5.45"
