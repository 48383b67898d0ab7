"""Memory math: weight bytes per method, KV cache bytes, and vLLM's block-based capacity."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.model.inspect_model import ModelInfo
from engine.plan.memory import (
    kv_bytes_per_token,
    kv_capacity,
    plan_cpu,
    plan_gpu,
    weight_bytes,
)
from engine.plan.vllm_facts import GIB
from tests.plan.model_configs import model_from_config


def test_reference_guide_70b_kv_example_recomputed(llama70b: ModelInfo) -> None:
    """The guide's formula is right but its arithmetic is not: 2×80×8×128×2×2048×32 is 21.5 GB, not 8.4 GB."""
    assert kv_bytes_per_token(llama70b) == 327_680  # 2 × 80 × 8 × 128 × 2
    assert kv_bytes_per_token(llama70b) * 2048 * 32 == 21_474_836_480  # exactly 20 GiB
    assert kv_bytes_per_token(llama70b, kv_dtype_bytes=1) == 163_840  # FP8 KV halves it


@pytest.mark.parametrize(
    ("method", "low_gb", "high_gb"),
    [
        # The guide's table says FP16 140 GB, INT8/FP8 70 GB, INT4 35 GB; counting what stays 16-bit
        # (2.1B embedding + lm_head parameters, 4.2 GB) and the scales adds 1-4.5 GB to each.
        ("bf16", 141.0, 141.2),
        ("fp8", 72.6, 72.8),
        ("int8-w8a8", 72.6, 72.8),
        ("w4a16", 39.4, 39.6),
        ("w8a16", 73.6, 73.8),
        ("nvfp4", 42.6, 42.8),
    ],
)
def test_70b_weight_bytes_count_unquantized_parts_and_scales(
    llama70b: ModelInfo, method: str, low_gb: float, high_gb: float
) -> None:
    weights = weight_bytes(llama70b, method)
    assert low_gb < weights.total / 1e9 < high_gb
    if method != "bf16":
        # Embeddings and lm_head stay at 2 bytes per parameter.
        assert weights.unquantized >= 2 * 2 * 128_256 * 8192


# Llama-3.1-8B by hand: 32 layers × (q, o 4096×4096; k, v 4096×1024; gate, up, down 4096×14336)
# = 6,979,321,856 Linear weights; output rows per layer 4096+1024+1024+4096+14336+14336+4096 = 43,008,
# × 32 = 1,376,256; the other 1,050,939,392 of its 8,030,261,248 parameters stay 16-bit (2,101,878,784 B).
@pytest.mark.parametrize(
    ("method", "quantized", "scales", "unquantized"),
    [
        ("w4a16", 3_489_660_928, 109_051_904, 2_101_878_784),  # 4 bits; a 2-byte scale per 128
        ("w8a16", 6_979_321_856, 109_051_904, 2_101_878_784),
        ("fp8", 6_979_321_856, 5_505_024, 2_101_878_784),  # a float32 scale per output row
        ("int8-w8a8", 6_979_321_856, 5_505_024, 2_101_878_784),
        ("nvfp4", 3_489_660_928, 436_207_616, 2_101_878_784),  # an FP8 scale per 16
        ("bf16", 0, 0, 16_060_522_496),
    ],
)
def test_llama8b_weight_bytes_by_hand(
    llama8b: ModelInfo, method: str, quantized: int, scales: int, unquantized: int
) -> None:
    weights = weight_bytes(llama8b, method)
    assert (weights.quantized, weights.scales, weights.unquantized) == (quantized, scales, unquantized)


@pytest.mark.parametrize(
    ("tensor_parallel_size", "bytes_per_token"),
    [(1, 131_072), (2, 65_536), (8, 16_384), (16, 16_384)],  # 8 KV heads: replicated beyond TP 8
)
def test_kv_heads_split_across_tensor_parallel_ranks(
    llama8b: ModelInfo, tensor_parallel_size: int, bytes_per_token: int
) -> None:
    assert kv_bytes_per_token(llama8b, 2, tensor_parallel_size) == bytes_per_token


@pytest.mark.parametrize(
    ("budget", "per_token", "max_len", "block", "blocks", "tokens", "concurrency", "starts"),
    [
        (1 * GIB, 2048, 2048, 128, 4096, 524_288, 256.0, True),
        (1 * GIB, 2048, 2000, 128, 4096, 512_000, 256.0, True),  # a request takes whole blocks: 16
        (10 * GIB, 327_680, 2048, 16, 2048, 32_768, 16.0, True),
        # Exactly one request's 128 blocks: concurrency 1.0, but the null block does not fit.
        (128 * 16 * 327_680, 327_680, 2048, 16, 128, 2048, 1.0, False),
        (129 * 16 * 327_680, 327_680, 2048, 16, 129, 2064, 1.0078125, True),
        (0, 2048, 2048, 16, 0, 0, 0.0, False),
        (-5, 2048, 2048, 16, 0, 0, 0.0, False),
    ],
)
def test_kv_capacity_in_vllm_blocks(
    budget: int,
    per_token: int,
    max_len: int,
    block: int,
    blocks: int,
    tokens: int,
    concurrency: float,
    starts: bool,
) -> None:
    capacity = kv_capacity(budget, per_token, max_len, block)
    assert (capacity.num_blocks, capacity.tokens, capacity.max_concurrency) == (blocks, tokens, concurrency)
    assert capacity.fits_one_sequence is starts


def test_gpu_plan_adds_up(llama8b: ModelInfo) -> None:
    weights = weight_bytes(llama8b, "fp8")
    plan = plan_gpu(llama8b, weights, 80 * GIB, 8192, 2, 1, 1, 8192, 1024)
    assert plan.usable_bytes == int(80 * GIB * 0.92)
    memory = plan.gpu_memory
    assert memory is not None
    # By hand: requested ceil(80 GiB × 0.92) = 79,027,398,247; weights 6,979,321,856 + 5,505,024 scales
    # + 2,101,878,784 16-bit = 9,086,705,664; activation peak 1024 rows × 128,256 vocab × 14 B +
    # 8192 tokens × 4096 × 5 B = 2,006,450,176; non-torch 0.25 GiB; CUDA graphs 1 GiB.
    assert memory.requested_bytes == 79_027_398_247
    assert memory.weights_bytes == 9_086_705_664
    assert memory.activation_peak_bytes == 2_006_450_176
    assert (memory.non_torch_bytes, memory.cudagraph_bytes) == (268_435_456, 1_073_741_824)
    assert plan.kv_budget_bytes == 66_592_065_127
    # 131,072 B/token × 16-token blocks = 2 MiB per block: 31,753 blocks, 512 per 8192-token request.
    assert (plan.capacity.num_blocks, plan.capacity.tokens) == (31_753, 508_048)
    assert plan.capacity.max_concurrency == 62.017578125
    halved = plan_gpu(llama8b, weights, 80 * GIB, 8192, 2, 2, 1, 8192, 1024)
    assert halved.weights_bytes == 4_543_352_832  # ceil(9,086,705,664 / 2)


def test_cpu_plan_uses_whole_gib_of_kv_space(llama8b: ModelInfo) -> None:
    weights = weight_bytes(llama8b, "int8-w8a8")
    plan = plan_cpu(llama8b, weights, 64 * GIB, 4096, 2, kv_cache_gib=4)
    assert plan.kv_budget_bytes == 4 * GIB
    assert plan.capacity.tokens == 32_768  # 4 GiB / (131,072 B × 128-token blocks) = 256 blocks of 128
    automatic = plan_cpu(llama8b, weights, 64 * GIB, 4096, 2)
    assert automatic.kv_budget_bytes % GIB == 0
    assert automatic.kv_budget_bytes + weights.total + automatic.overhead.total <= 0.75 * 64 * GIB


def test_deepseek_v3_on_eight_h200_holds_about_twenty_32k_sequences(tmp_path: Path) -> None:
    """Issue 9's case: vLLM holds about 20 sequences of 32k on 8× H200 (planned at 6.6 before MLA)."""
    model = model_from_config(tmp_path, "deepseek-v3")
    h200 = 143_771 * 1024**2  # NVML total of an H200
    plan = plan_gpu(
        model, weight_bytes(model, "fp8"), h200, 32768, 2, 8, 1, 16384, 1024, compute_capability=(9, 0)
    )
    assert plan.kv_bytes_per_token == 70_272  # the MLA latent, whole on every rank
    # FLASH_ATTN_MLA (SM90, bf16 latent: MultipleOf(16)) precedes FlashMLA's 64 in vLLM 0.32's priorities.
    assert plan.capacity.block_size == 16
    assert plan.capacity.bytes_per_block == 61 * 576 * 2 * 16  # 1,124,352
    assert 18 < plan.capacity.max_concurrency < 22


@pytest.mark.parametrize(
    ("avx512_bf16", "block_size", "tokens", "concurrency"),
    [
        # Qwen3-Next-80B (12 full + 36 Gated DeltaNet layers), 4 GiB of KV space at 4096 tokens. The state
        # page: conv 3 × 8192 × 2 B + temporal 32 × 128 × 128 × 2 B = 1,097,728 B; a full layer's token
        # 2 × 2 KV heads × 256 × 2 B = 2048 B. Block 128 · cdiv(1,097,728, 128 · 2048) = 640; 12 layers a
        # group → 15,728,640 B a block, 273 blocks; a request: cdiv(4096, 640) = 7 + 3 groups × 2 state
        # pages = 13 → 21.00×, 86,016 tokens.
        (False, 640, 86_016, 21.0),
        # With AVX-512 BF16 vLLM keeps the unset temporal state in float32: 49,152 + 2,097,152 =
        # 2,146,304 B → block 128 · cdiv(2,146,304, 262,144) = 1152; 1152 · 2048 · 12 = 28,311,552 B a
        # block, 151 blocks; a request cdiv(4096, 1152) = 4 + 6 = 10 → 15.10×, int(15.1 · 4096) = 61,849.
        (True, 1152, 61_849, 15.1),
    ],
)
def test_cpu_plan_keeps_the_state_dtype_vllm_cpu_uses(
    tmp_path: Path, avx512_bf16: bool, block_size: int, tokens: int, concurrency: float
) -> None:
    model = model_from_config(tmp_path, "qwen3-next-80b-a3b-instruct")
    plan = plan_cpu(
        model,
        weight_bytes(model, "bf16"),
        256 * GIB,
        4096,
        2,
        kv_cache_gib=4,
        cpu_has_avx512_bf16=avx512_bf16,
    )
    assert plan.capacity.block_size == block_size
    assert plan.capacity.tokens == tokens
    assert round(plan.capacity.max_concurrency, 2) == concurrency
