"""benchmarks/gpu_check.py: says plainly when there is no NVIDIA GPU, and reports NVML and the plans when there is."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from engine.hardware.detect import detect_hardware
from engine.hardware.nvml import NvmlLibrary
from tests.hardware.fake_nvml import FakeGpu, FakeNvml

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_check.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_on_this_machine_and_says_what_it_found() -> None:
    """The real script on the real machine: exit 1 and one clear line without a GPU, exit 0 and plans with one."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, check=False
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
    code = _load().main(["--config", "llama-3.1-8b", "--json"], nvml=NvmlLibrary())
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


def test_unknown_config_is_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    FakeNvml(monkeypatch, [FakeGpu()])
    assert _load().main(["--config", "no-such-model"], nvml=NvmlLibrary()) == 2
    assert "no bundled config 'no-such-model'" in capsys.readouterr().err
