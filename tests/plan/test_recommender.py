"""The recommender's rules per GPU generation, goal and model size, and the `recommend` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.hardware.detect import HardwareTarget, target_from_spec
from engine.model.inspect_model import ModelInfo
from engine.plan.recommender import PlanRequest, execution_for, recommend
from engine.plan.vllm_facts import GIB
from tests.plan.model_configs import model_from_config, write_config

CPU = HardwareTarget("cpu", "test CPU", 1, 64 * GIB, None, "detected", None, frozenset({"avx2", "avx512f"}))
AVX2_CPU = HardwareTarget("cpu", "test CPU", 1, 64 * GIB, None, "detected", None, frozenset({"avx2"}))


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


# How each method runs per compute capability in vLLM 0.32, read from its kernel selection code
# (worked out by hand, not through the recommender): compressed-tensors FP8 is W8A8
# (CompressedTensorsW8A8Fp8, min capability 89) from 8.9 and weight-only FP8 Marlin
# (CompressedTensorsW8A16Fp8, 75) below; INT8 W8A8 (CompressedTensorsW8A8Int8) from 7.5; WNA16
# (Marlin) from 7.5; NVFP4 native W4A4 (CUTLASS FP4) from 10.0 and Marlin FP4 weight-only from 7.5;
# MXFP4 weight-only (Marlin) from 8.0, native from 10.0; bitsandbytes and GGUF only through plugins
# (weight-only anywhere); nothing quantized in-tree on Volta (7.0). None: not runnable there.
W, WO, N = "w8a8", "weight-only", "none"
EXECUTION_BY_GPU: dict[str, dict[str, str | None]] = {
    "V100-32GB": {"bf16": N, "fp8": None, "int8-w8a8": None, "w8a16": None, "w4a16": None, "nvfp4": None,
                  "mxfp4": None, "bnb-4bit": WO, "bnb-8bit": WO, "gguf": WO},
    "T4": {"bf16": N, "fp8": WO, "int8-w8a8": W, "w8a16": WO, "w4a16": WO, "nvfp4": WO, "mxfp4": None,
           "bnb-4bit": WO, "bnb-8bit": WO, "gguf": WO},
    "A10G": {"bf16": N, "fp8": WO, "int8-w8a8": W, "w8a16": WO, "w4a16": WO, "nvfp4": WO, "mxfp4": WO,
             "bnb-4bit": WO, "bnb-8bit": WO, "gguf": WO},
    "A100-80GB": {"bf16": N, "fp8": WO, "int8-w8a8": W, "w8a16": WO, "w4a16": WO, "nvfp4": WO, "mxfp4": WO,
                  "bnb-4bit": WO, "bnb-8bit": WO, "gguf": WO},
    "L4": {"bf16": N, "fp8": W, "int8-w8a8": W, "w8a16": WO, "w4a16": WO, "nvfp4": WO, "mxfp4": WO,
           "bnb-4bit": WO, "bnb-8bit": WO, "gguf": WO},
    "RTX-4090": {"bf16": N, "fp8": W, "int8-w8a8": W, "w8a16": WO, "w4a16": WO, "nvfp4": WO, "mxfp4": WO,
                 "bnb-4bit": WO, "bnb-8bit": WO, "gguf": WO},
    "H100": {"bf16": N, "fp8": W, "int8-w8a8": W, "w8a16": WO, "w4a16": WO, "nvfp4": WO, "mxfp4": WO,
             "bnb-4bit": WO, "bnb-8bit": WO, "gguf": WO},
    "B200": {"bf16": N, "fp8": W, "int8-w8a8": W, "w8a16": WO, "w4a16": WO, "nvfp4": W, "mxfp4": W,
             "bnb-4bit": WO, "bnb-8bit": WO, "gguf": WO},
}  # fmt: skip


@pytest.mark.parametrize("gpu", sorted(EXECUTION_BY_GPU))
@pytest.mark.parametrize("goal", ["quality", "balanced", "memory", "throughput"])
def test_candidates_run_as_vllm_runs_them(llama8b: ModelInfo, gpu: str, goal: str) -> None:
    """Every listed method runs on the GPU, as vLLM's kernels run it; none it cannot run is listed."""
    result = recommend(llama8b, target_from_spec(gpu), PlanRequest(max_model_len=4096, goal=goal))  # type: ignore[arg-type]
    expected = EXECUTION_BY_GPU[gpu]
    listed = {c.method: c.execution for c in result.candidates}
    assert listed == {method: expected[method] for method in listed}
    assert None not in listed.values()


@pytest.mark.parametrize(("gpu", "method"), [(g, m) for g, table in EXECUTION_BY_GPU.items() for m in table])
def test_execution_table_per_gpu(gpu: str, method: str) -> None:
    assert execution_for(method, target_from_spec(gpu)) == EXECUTION_BY_GPU[gpu][method]


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
    awq = {"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}}
    model = model_from_config(tmp_path, "llama-3.1-8b", awq)
    result = recommend(model, target_from_spec("A10G"), PlanRequest(max_model_len=4096))
    assert [c.method for c in result.candidates] == ["w4a16"]
    assert not result.best.needs_quantization
    assert any("will not quantize it again" in note for note in result.notes)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "recommend", *args], capture_output=True, text=True, timeout=120
    )


def test_recommend_json_has_the_documented_shape(tmp_path: Path) -> None:
    write_config(tmp_path, "llama-3.1-8b")
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
    # A100 (8.0): INT8 W8A8 tensor-core matmuls; FP8 only as weight-only Marlin.
    executions = {c["method"]: c["execution"] for c in data["candidates"]}
    assert executions["int8-w8a8"] == "w8a8" and executions["fp8"] == "weight-only"


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
