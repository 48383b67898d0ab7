"""The one CPU KV-space rule, the GPU calibration file, and the plan's ServerConfig as recommend renders it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.hardware.detect import HardwareTarget, target_from_spec
from engine.model.inspect_model import ModelInfo
from engine.plan.recommender import PlanRequest, recommend
from engine.plan.server_plan import CalibrationKey, cpu_kv_space, load_calibration, record_calibration
from engine.plan.vllm_facts import GIB, VLLM_VERSION

MIB = 2**20
CPU = HardwareTarget("cpu", "test CPU", 1, 64 * GIB, None, "detected", None, frozenset({"avx2", "avx512f"}))


# (needed, available, weights) -> (gib, capped): needed × 1.25 rounded up, ≥ 1, ≤ available − weights − 2 GiB.
@pytest.mark.parametrize(
    ("needed", "available", "weights", "gib", "capped"),
    [
        (0, 16 * GIB, 0, 1, False),
        (4 * MIB, 16 * GIB, 0, 1, False),
        (int(0.8 * GIB), 16 * GIB, 0, 1, False),  # 0.8 × 1.25 = 1.0
        (GIB, 16 * GIB, 0, 2, False),  # 1.25 → 2
        (4 * GIB, 16 * GIB, 0, 5, False),
        (4 * GIB, 6 * GIB, GIB, 3, True),  # 6 − 1 − 2 = 3 GiB left
        (4 * GIB, 2 * GIB, GIB, 1, True),  # nothing left: still 1 GiB, and vLLM says so
    ],
)
def test_cpu_kv_space(needed: int, available: int, weights: int, gib: int, capped: bool) -> None:
    space = cpu_kv_space(needed, available, weights)
    assert (space.gib, space.capped) == (gib, capped)
    assert f"VLLM_CPU_KVCACHE_SPACE={gib}" in space.reason


# Llama-3.1-8B in bf16 on the CPU backend at 8192 tokens: 2 × 32 layers × 8 KV heads × 128 × 2 B =
# 128 KiB per token; a 128-token block of all layers is 16 MiB, so one GiB holds 64 blocks, and a
# request takes 8192 / 128 = 64 blocks: 1.00 request per GiB. Weights: 8,030,261,248 × 2 B; with
# 24 GiB available, 24 − 14.96 − 2 = 7.04 → at most 7 GiB.
@pytest.mark.parametrize(
    ("concurrency", "gib", "tokens", "max_concurrency", "fits"),
    [
        (1, 2, 16384, 2.0, True),  # needs 1 GiB, +25 % → 2
        (4, 5, 40960, 5.0, True),  # needs 4 GiB, +25 % → 5
        (10, 7, 57344, 7.0, False),  # wants 13 GiB, capped at 7
    ],
)
def test_cpu_plan_sizes_the_kv_space_for_context_times_concurrency(
    llama8b: ModelInfo, concurrency: int, gib: int, tokens: int, max_concurrency: float, fits: bool
) -> None:
    request = PlanRequest(max_model_len=8192, concurrency=concurrency, available_ram_bytes=24 * GIB)
    bf16 = next(c for c in recommend(llama8b, CPU, request).candidates if c.method == "bf16")
    assert bf16.server.cpu_kvcache_gib == gib
    assert bf16.server.environment() == {"VLLM_CPU_KVCACHE_SPACE": str(gib)}
    assert (bf16.kv_cache_tokens, bf16.max_concurrency, bf16.fits) == (tokens, max_concurrency, fits)
    assert any(reason.startswith(f"VLLM_CPU_KVCACHE_SPACE={gib}:") for reason in bf16.reasons)
    assert bf16.server.prediction is not None
    assert bf16.server.prediction.kv_cache_tokens == tokens


def test_cpu_plan_command_is_the_documented_one(llama8b: ModelInfo) -> None:
    request = PlanRequest(max_model_len=8192, available_ram_bytes=24 * GIB)
    bf16 = next(c for c in recommend(llama8b, CPU, request).candidates if c.method == "bf16")
    assert bf16.server.command_line() == (
        f"VLLM_CPU_KVCACHE_SPACE=2 python -m vllm.entrypoints.openai.api_server --model {llama8b.path} "
        "--max-model-len 8192 --enforce-eager"
    )
    assert bf16.vllm_args == tuple(bf16.server.vllm_args())


def test_an_explicit_cpu_kv_space_is_kept(llama8b: ModelInfo) -> None:
    request = PlanRequest(max_model_len=8192, cpu_kvcache_gib=3, available_ram_bytes=24 * GIB)
    bf16 = next(c for c in recommend(llama8b, CPU, request).candidates if c.method == "bf16")
    assert (bf16.server.cpu_kvcache_gib, bf16.kv_cache_tokens) == (3, 24576)


def test_calibration_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    key = CalibrationKey("H100-SXM", "0.33.0", "LlamaForCausalLM")
    assert load_calibration(key, path) is None
    recorded = record_calibration(key, 1_000_000, 900_000, path)
    assert recorded is not None and recorded.kv_ratio == pytest.approx(0.9)
    loaded = load_calibration(key, path)
    assert loaded == recorded
    assert "calibrated from a run on H100-SXM, vLLM 0.33.0" in loaded.sentence()
    assert load_calibration(CalibrationKey("H100-SXM", "0.33.0", "Qwen3ForCausalLM"), path) is None
    path.write_text("not json")
    assert load_calibration(key, path) is None


def test_a_gpu_plan_applies_a_recorded_calibration_and_says_so(llama8b: ModelInfo, tmp_path: Path) -> None:
    target = target_from_spec("H100")
    plain_request = PlanRequest(max_model_len=8192, calibration_file=tmp_path / "none.json")
    plain = next(c for c in recommend(llama8b, target, plain_request).candidates if c.method == "fp8")
    path = tmp_path / "cal.json"
    # A synthetic run: vLLM reported 80 % of the computed tokens on this GPU, vLLM and architecture.
    key = CalibrationKey(target.name, VLLM_VERSION, llama8b.architecture)
    record_calibration(key, 500_000, 400_000, path)
    calibrated = next(
        c
        for c in recommend(llama8b, target, PlanRequest(max_model_len=8192, calibration_file=path)).candidates
        if c.method == "fp8"
    )
    assert calibrated.kv_cache_tokens == int(plain.kv_cache_tokens * 0.8)
    assert calibrated.max_concurrency == pytest.approx(plain.max_concurrency * 0.8, abs=0.01)
    assert any(
        f"calibrated from a run on {target.name}, vLLM {VLLM_VERSION}" in r for r in calibrated.reasons
    )
    assert calibrated.server.prediction is not None
    assert calibrated.server.prediction.computed_kv_cache_tokens == plain.kv_cache_tokens
    assert json.loads(path.read_text())[key.text()]["kv_ratio"] == pytest.approx(0.8)
