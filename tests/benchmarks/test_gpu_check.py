"""benchmarks/gpu_check.py: says plainly when there is no NVIDIA GPU; reports NVML, the plans and GPU quantization when there is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from engine.hardware.detect import detect_hardware
from engine.hardware.nvml import NvmlLibrary
from tests.benchmarks.scripts import load_script, script_path
from tests.hardware.fake_nvml import FakeGpu, FakeNvml
from tests.quantize.quantize_support import build_tiny_llama

SCRIPT = script_path("gpu_check")


def _load() -> ModuleType:
    return load_script("gpu_check")


def test_runs_on_this_machine_and_says_what_it_found() -> None:
    """The real script on the real machine: exit 1 and one clear line without a GPU, exit 0 and plans with one."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quantize-gb", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if detect_hardware().gpus:
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("NVML: driver ")
        assert result.stdout.count("\nplan ") == 3
    else:
        assert result.returncode == 1
        assert result.stdout.startswith("no NVIDIA GPU: ")
        assert len(result.stdout.strip().splitlines()) == 1


def test_two_h100_report_and_plan(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    FakeNvml(monkeypatch, [FakeGpu(), FakeGpu(uuid="GPU-99999999-1111-2222-3333-444444444444")])
    code = _load().main(["--config", "llama-3.1-8b", "--json", "--quantize-gb", "0"], nvml=NvmlLibrary())
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["nvml"]["driver_version"] == "550.54.15"
    assert [gpu["catalogue"] for gpu in report["nvml"]["gpus"]] == ["H100-SXM", "H100-SXM"]
    plan = report["plans"][0]
    assert (plan["method"], plan["execution"], plan["tensor_parallel_size"]) == ("fp8", "w8a8", 1)
    # By hand: ceil(81,559 MiB × 0.92) requested; Llama-3.1-8B FP8 weights 9,086,705,664 B; KV =
    # requested − weights − 2,006,450,176 activation − 0.25 GiB non-torch − 1 GiB CUDA graphs =
    # 66,243,812,066 B = 31,587 blocks of 2 MiB, 512 per 8192-token request.
    assert plan["memory"]["requested_bytes"] == 78_679_145_186
    assert plan["weights_bytes_per_gpu"] == 9_086_705_664
    assert plan["memory"]["kv_cache_bytes"] == 66_243_812_066
    assert plan["kv_cache_tokens"] == 505_392
    assert plan["command"].startswith("vllm serve ")
    assert "quantize" not in report


def test_unknown_config_is_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    FakeNvml(monkeypatch, [FakeGpu()])
    assert _load().main(["--config", "no-such-model"], nvml=NvmlLibrary()) == 2
    assert "no bundled config 'no-such-model'" in capsys.readouterr().err


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="torch sees a CUDA GPU here, so the GPU run is measured"
)
def test_without_cuda_for_torch_the_quantize_section_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    FakeNvml(monkeypatch, [FakeGpu()])
    assert _load().main(["--config", "llama-3.1-8b"], nvml=NvmlLibrary()) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"quantize on the GPU: not measured, torch {torch.__version__} sees no CUDA device"


def test_a_method_that_is_not_data_free_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _load().main(["--quantize-methods", "fp8,gptq-w4a16"]) == 2
    assert "not a data-free method: gptq-w4a16" in capsys.readouterr().err


def test_quantize_report_times_both_devices_against_a_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The measuring code on this machine's CPU as both devices, on a tiny Llama instead of the built one."""
    module = _load()
    source = build_tiny_llama(tmp_path / "tiny")
    report = module.quantize_report(["fp8", "nvfp4a16"], 0.0, tmp_path, accelerator="cpu", source=source)
    assert [run["method"] for run in report["runs"]] == ["fp8", "nvfp4a16"]
    for run in report["runs"]:
        assert run["same_bits"] is True and run["device"] == "cpu"
        assert run["device_seconds"] > 0 and run["cpu_seconds"] > 0 and report["copy_seconds"] > 0
        assert run["peak_gpu_bytes"] == 0 and run["gpu_estimate_over_peak"] is None
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny"]  # outputs and the copy removed
    module.print_quantize(report)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("quantize tiny (") and "plain copy" in lines[0]
    assert lines[1].startswith("  fp8       cpu ") and "same bits: yes" in lines[1]


def test_the_output_digest_tells_any_changed_byte(tmp_path: Path) -> None:
    digest = _load().output_digest
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(bytes(range(256)) * 1000)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    data = bytearray((tmp_path / "b" / "model.safetensors").read_bytes())
    data[123_456] ^= 1
    (tmp_path / "b" / "model.safetensors").write_bytes(bytes(data))
    assert digest(tmp_path / "a") != digest(tmp_path / "b")
