"""The recommender's rules per GPU generation, goal and model size, and the `recommend` CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.hardware.detect import HardwareTarget, target_from_spec
from engine.model.inspect_model import ModelInfo, inspect_model
from engine.plan.recommender import PlanRequest, execution_for, recommend
from engine.plan.vllm_facts import GIB

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"


def _model(tmp_path_factory: pytest.TempPathFactory, name: str) -> ModelInfo:
    folder = tmp_path_factory.mktemp(name)
    shutil.copy(CONFIGS / f"{name}.json", folder / "config.json")
    return inspect_model(folder)


@pytest.fixture(scope="module")
def llama8b(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    return _model(tmp_path_factory, "llama-3.1-8b")


@pytest.fixture(scope="module")
def llama70b(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    return _model(tmp_path_factory, "llama-3.1-70b")


CPU = HardwareTarget("cpu", "test CPU", 1, 64 * GIB, None, "detected", None, frozenset({"avx2", "avx512f"}))
AVX2_CPU = HardwareTarget("cpu", "test CPU", 1, 64 * GIB, None, "detected", None, frozenset({"avx2"}))


@pytest.mark.parametrize(
    ("gpu", "method", "execution"),
    [
        ("H100", "fp8", "w8a8"),
        ("L4", "fp8", "w8a8"),  # Ada, 8.9
        ("A100-80GB", "fp8", "weight-only"),  # FP8 Marlin
        ("T4", "fp8", "weight-only"),  # vLLM 0.32 runs Marlin from 7.5
        ("V100-32GB", "fp8", None),
        ("T4", "int8-w8a8", "w8a8"),
        ("V100-32GB", "int8-w8a8", None),
        ("A10G", "w4a16", "weight-only"),
        ("T4", "w4a16", "weight-only"),
        ("V100-32GB", "w4a16", None),
        ("B200", "nvfp4", "w8a8"),  # native FP4 matmuls (reported as the low-precision path)
        ("H100", "nvfp4", "weight-only"),
        ("T4", "mxfp4", None),
        ("V100-32GB", "bf16", "none"),
        ("V100-32GB", "bnb-4bit", "weight-only"),
    ],
)
def test_execution_follows_vllm_capabilities(gpu: str, method: str, execution: str | None) -> None:
    assert execution_for(method, target_from_spec(gpu)) == execution


@pytest.mark.parametrize(
    ("method", "execution"),
    [
        ("int8-w8a8", "w8a8"),
        ("w4a16", "weight-only"),
        ("fp8", "weight-only"),
        ("nvfp4", None),
        ("bnb-4bit", None),
    ],
)
def test_cpu_backend_capabilities(method: str, execution: str | None) -> None:
    assert execution_for(method, CPU) == execution


@pytest.mark.parametrize(("method", "execution"), [("int8-w8a8", "w8a8"), ("w4a16", None), ("w8a16", None)])
def test_avx2_host_has_no_wna16_kernel(method: str, execution: str | None) -> None:
    assert execution_for(method, AVX2_CPU) == execution


@pytest.mark.parametrize(
    ("gpu", "goal", "best"),
    [
        ("H100", "balanced", "fp8"),
        ("H100", "quality", "fp8"),
        ("H100", "throughput", "fp8"),
        ("L40S", "balanced", "fp8"),
        ("A100-80GB", "balanced", "int8-w8a8"),
        ("A100-80GB", "quality", "int8-w8a8"),
        ("A10G", "memory", "w4a16"),
        ("T4", "balanced", "int8-w8a8"),
        ("B200", "balanced", "fp8"),
        ("B200", "throughput", "nvfp4"),
    ],
)
def test_best_method_per_generation(llama8b: ModelInfo, gpu: str, goal: str, best: str) -> None:
    result = recommend(llama8b, target_from_spec(gpu), PlanRequest(max_model_len=4096, goal=goal))  # type: ignore[arg-type]
    assert result.best.method == best
    assert result.best.fits


@pytest.mark.parametrize("gpu", ["T4", "V100-32GB", "A10G", "L4", "A100-80GB", "H100", "B200", "RTX-4090"])
@pytest.mark.parametrize("goal", ["quality", "balanced", "memory", "throughput"])
def test_never_recommends_what_the_gpu_cannot_run(llama8b: ModelInfo, gpu: str, goal: str) -> None:
    target = target_from_spec(gpu)
    result = recommend(llama8b, target, PlanRequest(max_model_len=4096, goal=goal))  # type: ignore[arg-type]
    assert "bf16" in [c.method for c in result.candidates]  # the baseline is always listed
    for candidate in result.candidates:
        assert execution_for(candidate.method, target) == candidate.execution


def test_70b_on_one_h100_needs_4bit_and_on_two_runs_fp8(llama70b: ModelInfo) -> None:
    request = PlanRequest(max_model_len=2048, concurrency=32, goal="quality")
    one = recommend(llama70b, target_from_spec("H100"), request)
    assert one.best.method in {"w4a16", "nvfp4"} and one.best.fits
    fp8 = next(c for c in one.candidates if c.method == "fp8")
    assert not fp8.fits and fp8.machines_needed == 2
    two = recommend(llama70b, target_from_spec("H100x2"), request)
    assert two.best.method == "fp8" and two.best.tensor_parallel_size == 2 and two.best.fits
    assert "--tensor-parallel-size" in two.best.vllm_args


def test_small_models_get_a_4bit_warning_and_8bit_first(llama8b: ModelInfo) -> None:
    result = recommend(llama8b, target_from_spec("A100-80GB"), PlanRequest(max_model_len=4096))
    methods = [c.method for c in result.candidates]
    assert methods.index("int8-w8a8") < methods.index("w4a16")
    w4 = next(c for c in result.candidates if c.method == "w4a16")
    assert any("small models" in warning for warning in w4.warnings)


def test_fp8_kv_cache_suggested_when_concurrency_is_tight(llama8b: ModelInfo) -> None:
    result = recommend(
        llama8b, target_from_spec("L4"), PlanRequest(max_model_len=32768, concurrency=4, goal="quality")
    )
    fp8 = next(c for c in result.candidates if c.method == "fp8")
    assert fp8.kv_cache_dtype == "fp8"
    assert "--kv-cache-dtype" in fp8.vllm_args and fp8.fits


def test_cpu_plan_says_so_and_uses_the_cpu_entry_point(llama8b: ModelInfo) -> None:
    result = recommend(llama8b, CPU, PlanRequest(max_model_len=4096))
    assert any("CPU backend" in note for note in result.notes)
    assert result.best.method == "int8-w8a8"
    assert result.best.vllm_args[:3] == ("python", "-m", "vllm.entrypoints.openai.api_server")
    assert dict(result.best.env)["VLLM_CPU_KVCACHE_SPACE"].isdigit()


def test_already_quantized_checkpoint_is_served_as_is(tmp_path: Path) -> None:
    config = json.loads((CONFIGS / "llama-3.1-8b.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128}
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = recommend(inspect_model(tmp_path), target_from_spec("A10G"), PlanRequest(max_model_len=4096))
    assert [c.method for c in result.candidates] == ["w4a16"]
    assert not result.best.needs_quantization
    assert any("will not quantize it again" in note for note in result.notes)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "recommend", *args], capture_output=True, text=True, timeout=120
    )


def test_recommend_json_has_the_documented_shape(tmp_path: Path) -> None:
    shutil.copy(CONFIGS / "llama-3.1-8b.json", tmp_path / "config.json")
    result = _cli("--model", str(tmp_path), "--gpu", "A100-80GBx4", "--max-model-len", "8192", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["hardware"] | {"memory_bytes": 0} == {
        "kind": "gpu",
        "name": "A100-80GB",
        "count": 4,
        "compute_capability": "8.0",
        "memory_bytes": 0,
        "source": "catalogue",
    }
    assert data["model"]["params"] == 8_030_261_248 and data["model"]["num_kv_heads"] == 8
    keys = {"method", "execution", "weight_bytes", "kv_cache_dtype", "kv_cache_bytes_per_token", "fits"}
    keys |= {"tensor_parallel_size", "max_concurrency", "vllm_args", "reasons", "warnings"}
    for candidate in data["candidates"]:
        assert keys <= candidate.keys()
        assert candidate["execution"] in {"w8a8", "weight-only", "none"}
    assert "bf16" in [c["method"] for c in data["candidates"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "/no/such/folder"), "does not exist"),
        (("--model", "tests/fixtures/configs"), "no config.json"),
        (("--model", "tests", "--gpu", "H1OO"), "unknown GPU"),
        (("--gpu", "H100x0"), "GPU"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = _cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_list_gpus() -> None:
    result = _cli("--list-gpus")
    assert result.returncode == 0
    assert "H100" in result.stdout and "T4" in result.stdout
