"""Tests for hardware detection: the NVML wrapper, GPU and host readings, and the planner's hardware target.

There is no GPU on the development machine, so the GPU path runs against nvidia-ml-py's own module
with its NVML entry points replaced: the fakes return the binding's real ctypes structures and raise
its real ``NVMLError`` subclasses, and every NVML function a test does not fake raises
``NVMLError_FunctionNotFound`` (so a fake handle can never reach a real driver).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import psutil
import pynvml
import pytest

from engine.errors import HardwareError
from engine.hardware.detect import (
    CPU_BACKEND_FLAGS,
    GpuInfo,
    HardwareSnapshot,
    HostInfo,
    detect_hardware,
    parse_cpuinfo,
    sample_gpus,
    target_from_snapshot,
    target_from_spec,
)
from engine.hardware.gpu_catalog import find_gpu
from engine.hardware.nvml import NVML_OK, NvmlLibrary
from tests.hardware.fake_nvml import MIB, TWO_H100, FakeGpu, FakeNvml, nvml_error


def expected_info(index: int, gpu: FakeGpu) -> GpuInfo:
    """The GpuInfo a correct reading of ``gpu`` gives (memory version 2: reserved memory apart)."""
    return GpuInfo(
        index=index,
        name=gpu.name,
        uuid=gpu.uuid,
        compute_capability=gpu.compute_capability,
        memory_total_bytes=gpu.total_mib * MIB,
        memory_used_bytes=gpu.used_mib * MIB,
        memory_free_bytes=(gpu.total_mib - gpu.used_mib - gpu.reserved_mib) * MIB,
        utilization_percent=float(gpu.utilization[0]),
        memory_utilization_percent=float(gpu.utilization[1]),
        temperature_c=float(gpu.temperature_c),
        power_w=gpu.power_mw / 1000,
        power_limit_w=gpu.power_limit_mw / 1000,
        mig_mode=None if gpu.mig_modes is None else gpu.mig_modes[0] == 1,
    )


# --- GPU path, through the fake driver -------------------------------------------------------------


def test_detect_hardware_reads_every_field(two_h100: FakeNvml) -> None:
    snapshot = detect_hardware(nvml=NvmlLibrary())
    assert snapshot.gpus == tuple(expected_info(index, gpu) for index, gpu in enumerate(TWO_H100))
    assert snapshot.driver_version == "550.54.15"
    assert snapshot.cuda_driver_version == "12.4"
    assert snapshot.nvml_status == NVML_OK
    assert two_h100.init_calls == 1


def test_two_identical_gpus_make_one_target_of_two(two_h100: FakeNvml) -> None:
    target = target_from_snapshot(detect_hardware(nvml=NvmlLibrary()))
    assert target.kind == "gpu"
    assert target.name == "NVIDIA H100 80GB HBM3"
    assert target.count == 2
    assert target.memory_bytes == 81559 * MIB
    assert target.compute_capability == (9, 0)
    assert target.source == "detected"
    assert target.catalog_entry is find_gpu("H100-SXM")


@pytest.mark.parametrize(
    ("function", "error", "emptied_fields"),
    [
        ("nvmlDeviceGetUUID", "NVML_ERROR_NOT_SUPPORTED", {"uuid"}),
        ("nvmlDeviceGetCudaComputeCapability", "NVML_ERROR_UNKNOWN", {"compute_capability"}),
        (
            "nvmlDeviceGetMemoryInfo",
            "NVML_ERROR_GPU_IS_LOST",
            {"memory_total_bytes", "memory_used_bytes", "memory_free_bytes"},
        ),
        (
            "nvmlDeviceGetUtilizationRates",
            "NVML_ERROR_NOT_SUPPORTED",
            {"utilization_percent", "memory_utilization_percent"},
        ),
        ("nvmlDeviceGetTemperature", "NVML_ERROR_NOT_SUPPORTED", {"temperature_c"}),
        ("nvmlDeviceGetPowerUsage", "NVML_ERROR_NO_PERMISSION", {"power_w"}),
        ("nvmlDeviceGetEnforcedPowerLimit", "NVML_ERROR_NOT_SUPPORTED", {"power_limit_w"}),
        ("nvmlDeviceGetMigMode", "NVML_ERROR_NOT_SUPPORTED", {"mig_mode"}),
    ],
)
def test_a_failing_call_empties_only_its_fields(
    two_h100: FakeNvml, function: str, error: str, emptied_fields: set[str]
) -> None:
    two_h100.failing[function] = nvml_error(error)
    gpus = sample_gpus(NvmlLibrary())
    emptied: dict[str, Any] = dict.fromkeys(emptied_fields)
    expected = dataclasses.replace(expected_info(0, TWO_H100[0]), **emptied)
    assert gpus[0] == expected


def test_a_gpu_without_a_name_still_counts(two_h100: FakeNvml) -> None:
    two_h100.failing["nvmlDeviceGetName"] = nvml_error("NVML_ERROR_UNKNOWN")
    gpus = sample_gpus(NvmlLibrary())
    assert [gpu.name for gpu in gpus] == ["NVIDIA GPU 0", "NVIDIA GPU 1"]
    assert gpus[0].memory_total_bytes == 81559 * MIB


def test_a_bytes_name_from_an_older_binding_is_decoded(two_h100: FakeNvml) -> None:
    two_h100.install("nvmlDeviceGetName", lambda handle: b"NVIDIA H100 80GB HBM3")
    assert [gpu.name for gpu in sample_gpus(NvmlLibrary())] == ["NVIDIA H100 80GB HBM3"] * 2


def test_memory_falls_back_to_version_1(two_h100: FakeNvml) -> None:
    two_h100.memory_v2_supported = False
    gpu = sample_gpus(NvmlLibrary())[0]
    assert gpu.memory_total_bytes == 81559 * MIB
    assert gpu.memory_used_bytes == (1024 + 512) * MIB  # version 1 counts reserved memory as used


def test_mig_mode_on(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml(monkeypatch, [FakeGpu(mig_modes=[1, 1])])
    assert sample_gpus(NvmlLibrary())[0].mig_mode is True


def test_an_unreadable_gpu_is_left_out(two_h100: FakeNvml) -> None:
    real_handle = pynvml.nvmlDeviceGetHandleByIndex

    def lost_second(index: int) -> Any:
        if index == 1:
            raise nvml_error("NVML_ERROR_GPU_IS_LOST")
        return real_handle(index)

    two_h100.install("nvmlDeviceGetHandleByIndex", lost_second)
    snapshot = detect_hardware(nvml=NvmlLibrary())
    assert [gpu.index for gpu in snapshot.gpus] == [0]
    assert snapshot.nvml_status == NVML_OK


def test_no_readable_gpu_says_why(two_h100: FakeNvml) -> None:
    two_h100.failing["nvmlDeviceGetHandleByIndex"] = nvml_error("NVML_ERROR_NO_PERMISSION")
    snapshot = detect_hardware(nvml=NvmlLibrary())
    assert snapshot.gpus == ()
    assert snapshot.nvml_status == "NVML sees 2 NVIDIA GPU(s) but none could be read (lost, or no permission)"
    assert target_from_snapshot(snapshot).kind == "cpu"


def test_driver_without_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml(monkeypatch, [])
    snapshot = detect_hardware(nvml=NvmlLibrary())
    assert snapshot.gpus == ()
    assert snapshot.nvml_status == "NVML found no NVIDIA GPU"
    assert snapshot.driver_version == "550.54.15"


@pytest.mark.parametrize(
    ("v2", "v1", "expected"),
    [(12040, 12080, "12.4"), (None, 12080, "12.8"), (13000, None, "13.0"), (None, None, None)],
)
def test_cuda_driver_version(
    two_h100: FakeNvml, v2: int | None, v1: int | None, expected: str | None
) -> None:
    for function, version in (
        ("nvmlSystemGetCudaDriverVersion_v2", v2),
        ("nvmlSystemGetCudaDriverVersion", v1),
    ):
        if version is None:
            two_h100.failing[function] = nvml_error("NVML_ERROR_FUNCTION_NOT_FOUND")
        else:
            two_h100.install(function, lambda version=version: version)
    assert detect_hardware(nvml=NvmlLibrary()).cuda_driver_version == expected


# --- The NVML wrapper -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (nvml_error("NVML_ERROR_LIBRARY_NOT_FOUND"), "NVML library not found (no NVIDIA driver installed)"),
        (nvml_error("NVML_ERROR_DRIVER_NOT_LOADED"), "no NVIDIA driver loaded"),
        (
            nvml_error("NVML_ERROR_LIB_RM_VERSION_MISMATCH"),
            "NVIDIA driver and NVML library versions differ (reboot after the driver upgrade)",
        ),
        (nvml_error("NVML_ERROR_NO_PERMISSION"), "no permission to talk to the NVIDIA driver"),
        (nvml_error("NVML_ERROR_UNKNOWN"), "NVML failed to start (Unknown Error)"),
        (OSError("libnvidia-ml.so.1: cannot open shared object file"), "NVML could not be loaded"),
    ],
)
def test_failed_start_means_no_gpu(two_h100: FakeNvml, error: BaseException, status: str) -> None:
    two_h100.init_error = error
    library = NvmlLibrary()
    snapshot = detect_hardware(nvml=library)
    assert snapshot.gpus == ()
    assert snapshot.nvml_status.startswith(status)
    assert "\n" not in snapshot.nvml_status
    assert snapshot.driver_version is None
    assert snapshot.cuda_driver_version is None
    assert library.available is False
    assert library.query("nvmlDeviceGetCount") is None
    assert target_from_snapshot(snapshot).kind == "cpu"
    assert two_h100.init_calls == 1  # the failure is remembered, not retried on every tick
    assert two_h100.atexit_callbacks == []


def test_missing_binding_means_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    library = NvmlLibrary()
    assert library.status() == "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    assert library.query("nvmlDeviceGetCount") is None
    assert library.constant("NVML_TEMPERATURE_GPU") is None
    snapshot = detect_hardware(nvml=library)
    assert (snapshot.gpus, snapshot.nvml_status) == ((), library.status())
    library.shutdown()  # nothing to shut down, and no error


# --- This machine, for real -------------------------------------------------------------------------


def test_detect_hardware_on_this_machine() -> None:
    snapshot = detect_hardware()
    if snapshot.nvml_status == NVML_OK:
        assert snapshot.gpus
        assert all(gpu.name and gpu.memory_total_bytes for gpu in snapshot.gpus)
        assert snapshot.driver_version
    else:
        assert snapshot.gpus == ()
        assert sample_gpus() == ()
        assert snapshot.nvml_status.strip() and "\n" not in snapshot.nvml_status
        assert snapshot.driver_version is None
        assert target_from_snapshot(snapshot).kind == "cpu"
    host = snapshot.host
    assert host.cpu_model.strip()
    assert host.logical_cores == psutil.cpu_count(logical=True)
    assert host.physical_cores == psutil.cpu_count(logical=False)
    assert host.memory_total_bytes == psutil.virtual_memory().total
    assert 0 < host.memory_available_bytes <= host.memory_total_bytes
    assert host.cpu_flags <= CPU_BACKEND_FLAGS
    assert host.cpu_percent is not None and 0.0 <= host.cpu_percent <= 100.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/cpuinfo is Linux's")
def test_host_flags_come_from_proc_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    # The emulated AVX2 host (QUANT_TUI_CPU_ISA) has its own test: tests/hardware/test_cpu_isa.py.
    monkeypatch.delenv("QUANT_TUI_CPU_ISA", raising=False)
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        first_block = cpuinfo.read().split("\n\n")[0]
    expected_model, expected_flags = parse_cpuinfo(first_block)
    host = detect_hardware().host
    assert host.cpu_flags == expected_flags
    if expected_model:
        assert host.cpu_model == expected_model


SAPPHIRE_RAPIDS = """processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu sse sse2 avx avx2 fma f16c avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 \
avx512_vnni avx512_fp16 amx_bf16 amx_tile amx_int8 sha_ni
"""
EPYC_ROME = """processor	: 0
model name	: AMD EPYC 7B12
flags		: fpu sse sse2 avx avx2 fma f16c sha_ni

processor	: 1
model name	: Something Else
flags		: avx512f
"""
NEOVERSE_V2 = """processor	: 0
BogoMIPS	: 2000.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve sve2 svei8mm svebf16 i8mm bf16
CPU implementer	: 0x41
"""


@pytest.mark.parametrize(
    ("text", "model", "flags"),
    [
        (
            SAPPHIRE_RAPIDS,
            "Intel(R) Xeon(R) Platinum 8480+",
            {
                "avx2",
                "fma",
                "f16c",
                "avx512f",
                "avx512dq",
                "avx512bw",
                "avx512vl",
                "avx512_bf16",
                "avx512_vnni",
                "avx512_fp16",
                "amx_bf16",
                "amx_tile",
                "amx_int8",
            },
        ),
        (EPYC_ROME, "AMD EPYC 7B12", {"avx2", "fma", "f16c"}),
        (NEOVERSE_V2, None, {"asimd", "sve", "sve2", "i8mm", "bf16"}),
        ("", None, set()),
    ],
)
def test_parse_cpuinfo(text: str, model: str | None, flags: set[str]) -> None:
    assert parse_cpuinfo(text) == (model, frozenset(flags))


# --- Targets ------------------------------------------------------------------------------------------

HOST = HostInfo(
    cpu_model="AMD EPYC 7B12",
    physical_cores=2,
    logical_cores=4,
    memory_total_bytes=32 * 2**30,
    memory_available_bytes=20 * 2**30,
    cpu_flags=frozenset({"avx2"}),
    cpu_percent=3.0,
)


def gpu(index: int, name: str, memory_mib: int | None, cc: tuple[int, int] | None = (9, 0)) -> GpuInfo:
    return GpuInfo(
        index=index,
        name=name,
        uuid=None,
        compute_capability=cc,
        memory_total_bytes=None if memory_mib is None else memory_mib * MIB,
        memory_used_bytes=None,
        memory_free_bytes=None,
        utilization_percent=None,
        memory_utilization_percent=None,
        temperature_c=None,
        power_w=None,
        power_limit_w=None,
        mig_mode=None,
    )


H100_NAME = "NVIDIA H100 80GB HBM3"
A100_NAME = "NVIDIA A100-SXM4-80GB"


@pytest.mark.parametrize(
    ("gpus", "name", "count", "memory_mib", "cc", "catalogue_name"),
    [
        ([gpu(0, H100_NAME, 81559)], H100_NAME, 1, 81559, (9, 0), "H100-SXM"),
        ([gpu(0, H100_NAME, 81559), gpu(1, H100_NAME, 81559)], H100_NAME, 2, 81559, (9, 0), "H100-SXM"),
        (
            [gpu(0, H100_NAME, 81559), gpu(1, A100_NAME, 81920, (8, 0)), gpu(2, H100_NAME, 81559)],
            H100_NAME,
            2,
            81559,
            (9, 0),
            "H100-SXM",
        ),
        (
            [gpu(0, A100_NAME, 81920, (8, 0)), gpu(1, A100_NAME, 80000, (8, 0))],
            A100_NAME,
            2,
            80000,
            (8, 0),
            "A100-80GB",
        ),
        ([gpu(0, H100_NAME, None, None)], H100_NAME, 1, 81559, (9, 0), "H100-SXM"),  # from the catalogue
        ([gpu(0, "NVIDIA H800", 81559)], "NVIDIA H800", 1, 81559, (9, 0), None),
        ([gpu(0, "NVIDIA Mystery", None, None)], "NVIDIA Mystery", 1, 0, None, None),
    ],
)
def test_target_from_snapshot(
    gpus: list[GpuInfo],
    name: str,
    count: int,
    memory_mib: int,
    cc: tuple[int, int] | None,
    catalogue_name: str | None,
) -> None:
    snapshot = HardwareSnapshot(tuple(gpus), HOST, "550.54.15", "12.4", NVML_OK)
    target = target_from_snapshot(snapshot)
    assert (target.kind, target.name, target.count, target.source) == ("gpu", name, count, "detected")
    assert target.memory_bytes == memory_mib * MIB
    assert target.compute_capability == cc
    assert (target.catalog_entry.name if target.catalog_entry else None) == catalogue_name


def test_target_without_gpus_is_the_cpu() -> None:
    target = target_from_snapshot(HardwareSnapshot((), HOST, None, None, "no NVIDIA driver loaded"))
    assert target.kind == "cpu"
    assert target.name == "AMD EPYC 7B12"
    assert target.count == 1
    assert target.memory_bytes == 32 * 2**30
    assert target.compute_capability is None
    assert target.catalog_entry is None


@pytest.mark.parametrize(
    ("spec", "name", "count", "cc"),
    [
        ("H100", "H100-SXM", 1, (9, 0)),
        ("A100-80GBx4", "A100-80GB", 4, (8, 0)),
        ("l40s x 2", "L40S", 2, (8, 9)),
        ("rtx5090", "RTX-5090", 1, (12, 0)),
    ],
)
def test_target_from_spec(spec: str, name: str, count: int, cc: tuple[int, int]) -> None:
    target = target_from_spec(spec)
    assert (target.kind, target.name, target.count, target.source) == ("gpu", name, count, "catalogue")
    assert target.compute_capability == cc
    assert target.catalog_entry is find_gpu(name)
    assert target.memory_bytes == find_gpu(name).memory_bytes


def test_target_from_unknown_spec() -> None:
    with pytest.raises(HardwareError, match="unknown GPU 'H900'"):
        target_from_spec("H900")
