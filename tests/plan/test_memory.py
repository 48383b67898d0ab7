"""Memory math: weight bytes per method, KV cache bytes, and vLLM's block-based capacity."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.model.inspect_model import ModelInfo, inspect_model
from engine.plan.memory import (
    kv_bytes_per_token,
    kv_capacity,
    plan_cpu,
    plan_gpu,
    weight_bytes,
)
from engine.plan.vllm_facts import GIB

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"


@pytest.fixture(scope="module")
def llama70b(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    folder = tmp_path_factory.mktemp("llama70b")
    shutil.copy(CONFIGS / "llama-3.1-70b.json", folder / "config.json")
    return inspect_model(folder)


@pytest.fixture(scope="module")
def llama8b(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    folder = tmp_path_factory.mktemp("llama8b")
    shutil.copy(CONFIGS / "llama-3.1-8b.json", folder / "config.json")
    return inspect_model(folder)


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


def test_w4a16_group_scales(llama8b: ModelInfo) -> None:
    weights = weight_bytes(llama8b, "w4a16")
    assert weights.quantized == llama8b.linear_params // 2
    assert weights.scales == llama8b.linear_params // 128 * 2


def test_per_channel_scales_follow_output_rows(llama8b: ModelInfo) -> None:
    weights = weight_bytes(llama8b, "fp8")
    assert weights.scales == llama8b.linear_out_features * 4
    assert weights.quantized == llama8b.linear_params


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
    assert memory.requested_bytes == 79_027_398_247  # ceil(80 GiB × 0.92)
    assert plan.kv_budget_bytes == (
        79_027_398_247
        - plan.weights_bytes
        - memory.activation_peak_bytes
        - memory.non_torch_bytes
        - memory.cudagraph_bytes
    )
    assert plan.capacity.tokens > 100_000
    halved = plan_gpu(llama8b, weights, 80 * GIB, 8192, 2, 2, 1, 8192, 1024)
    assert halved.weights_bytes == (weights.total + 1) // 2


def test_cpu_plan_uses_whole_gib_of_kv_space(llama8b: ModelInfo) -> None:
    weights = weight_bytes(llama8b, "int8-w8a8")
    plan = plan_cpu(llama8b, weights, 64 * GIB, 4096, 2, kv_cache_gib=4)
    assert plan.kv_budget_bytes == 4 * GIB
    assert plan.capacity.tokens == 4 * GIB // (131_072 * 128) * 128
    automatic = plan_cpu(llama8b, weights, 64 * GIB, 4096, 2)
    assert automatic.kv_budget_bytes % GIB == 0
    assert automatic.kv_budget_bytes + weights.total + automatic.overhead.total <= 0.75 * 64 * GIB


def test_deepseek_v3_on_eight_h200_holds_about_twenty_32k_sequences(tmp_path: Path) -> None:
    """Issue 9's case: vLLM holds about 20 sequences of 32k on 8× H200 (planned at 6.6 before MLA)."""
    shutil.copy(CONFIGS / "deepseek-v3.json", tmp_path / "config.json")
    model = inspect_model(tmp_path)
    h200 = 143_771 * 1024**2  # NVML total of an H200
    plan = plan_gpu(model, weight_bytes(model, "fp8"), h200, 32768, 2, 8, 1, 16384, 1024)
    assert plan.kv_bytes_per_token == 70_272  # the MLA latent, whole on every rank
    assert plan.capacity.block_size == 64  # FlashMLA
    assert 18 < plan.capacity.max_concurrency < 22
