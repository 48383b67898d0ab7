"""What this machine has (GPUs via NVML, host via psutil) and the hardware target the planner plans for."""

from __future__ import annotations

import contextlib
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engine.hardware.cpu_isa import visible_cpu_flags
from engine.hardware.gpu_catalog import GpuModel, match_detected_name, parse_gpu_spec
from engine.hardware.nvml import NVML_OK, NvmlLibrary, default_library

__all__ = [
    "CPU_BACKEND_FLAGS",
    "GpuInfo",
    "HardwareSnapshot",
    "HardwareTarget",
    "HostInfo",
    "detect_hardware",
    "parse_cpuinfo",
    "sample_gpus",
    "sample_host",
    "target_from_snapshot",
    "target_from_spec",
]

# CPU features that change what vLLM's CPU backend can do: its AVX-512 build (with BF16 and VNNI
# paths) or the AVX2 fallback on x86, AMX tiles for BF16/INT8 matmuls and attention, and the
# NEON/SVE/BF16/I8MM paths on Arm. Names as Linux spells them in /proc/cpuinfo.
CPU_BACKEND_FLAGS = frozenset(
    {
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512dq",
        "avx512_bf16",
        "avx512_vnni",
        "avx512_fp16",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
        "amx_fp16",
        "asimd",
        "sve",
        "sve2",
        "bf16",
        "i8mm",
    }
)

_PROC_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One NVIDIA GPU at one moment; a field NVML could not answer is ``None``.

    Attributes:
        index: NVML device index.
        name: Device name as NVML reports it, e.g. ``"NVIDIA H100 80GB HBM3"``.
        uuid: ``"GPU-…"`` identifier.
        compute_capability: CUDA compute capability, e.g. ``(9, 0)``.
        memory_total_bytes: Total device memory.
        memory_used_bytes: Memory in use (without the driver's reserved memory where NVML separates it).
        memory_free_bytes: Memory free.
        utilization_percent: Share of the last sample period a kernel was running.
        memory_utilization_percent: Share of the last sample period device memory was read or written.
        temperature_c: Core temperature in °C.
        power_w: Current power draw in W.
        power_limit_w: Enforced power limit in W.
        mig_mode: Whether MIG (Multi-Instance GPU) is on; ``None`` on GPUs without MIG.
    """

    index: int
    name: str
    uuid: str | None
    compute_capability: tuple[int, int] | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    utilization_percent: float | None
    memory_utilization_percent: float | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None
    mig_mode: bool | None


@dataclass(frozen=True, slots=True)
class HostInfo:
    """The host's CPU and memory at one moment.

    Attributes:
        cpu_model: CPU model name, e.g. ``"Intel(R) Xeon(R) Platinum 8480+"``.
        physical_cores: Physical cores (``None`` where the OS does not say).
        logical_cores: Logical CPUs.
        memory_total_bytes: Installed RAM.
        memory_available_bytes: RAM available to new processes without swapping.
        cpu_flags: The CPU features in :data:`CPU_BACKEND_FLAGS` this CPU has (Linux only; empty elsewhere).
        cpu_percent: System-wide CPU use since the previous sample; the first sample of a process is 0.0.
    """

    cpu_model: str
    physical_cores: int | None
    logical_cores: int
    memory_total_bytes: int
    memory_available_bytes: int
    cpu_flags: frozenset[str]
    cpu_percent: float | None


@dataclass(frozen=True, slots=True)
class HardwareSnapshot:
    """Everything detected about this machine at one moment.

    Attributes:
        gpus: The NVIDIA GPUs NVML sees, by index; empty without one.
        host: CPU and RAM.
        driver_version: NVIDIA driver version, e.g. ``"550.54.15"``.
        cuda_driver_version: Highest CUDA version the driver supports, e.g. ``"12.4"``.
        nvml_status: ``"ok"``, or a one-line reason why no GPU is visible.
    """

    gpus: tuple[GpuInfo, ...]
    host: HostInfo
    driver_version: str | None
    cuda_driver_version: str | None
    nvml_status: str


@dataclass(frozen=True, slots=True)
class HardwareTarget:
    """The hardware the planner plans for: detected here, or taken from the catalogue.

    Attributes:
        kind: ``"gpu"``, or ``"cpu"`` for vLLM's CPU backend.
        name: NVML device name, catalogue name, or CPU model.
        count: Number of GPUs (1 for the CPU).
        memory_bytes: Memory per GPU, or the host's total RAM for the CPU.
        compute_capability: CUDA compute capability; ``None`` for the CPU.
        source: ``"detected"`` on this machine or from the ``"catalogue"``.
        catalog_entry: The catalogue entry for the GPU, also for detected GPUs when the name is known.
        cpu_flags: For the CPU backend, the host's instruction-set flags (vLLM's CPU kernels differ
            between its AVX2 and AVX-512 builds).
    """

    kind: Literal["gpu", "cpu"]
    name: str
    count: int
    memory_bytes: int
    compute_capability: tuple[int, int] | None
    source: Literal["detected", "catalogue"]
    catalog_entry: GpuModel | None
    cpu_flags: frozenset[str] = frozenset()


def detect_hardware(nvml: NvmlLibrary | None = None) -> HardwareSnapshot:
    """Detect GPUs, driver and host; never raises (a missing NVML just means no GPU).

    Args:
        nvml: The NVML library to ask; the process-wide one by default.
    """
    library = nvml if nvml is not None else default_library()
    gpus = sample_gpus(library)
    return HardwareSnapshot(
        gpus=gpus,
        host=sample_host(),
        driver_version=_as_text(library.query("nvmlSystemGetDriverVersion")),
        cuda_driver_version=_cuda_driver_version(library),
        nvml_status=_gpu_status(library, gpus),
    )


def sample_gpus(nvml: NvmlLibrary | None = None) -> tuple[GpuInfo, ...]:
    """A fresh reading of every NVIDIA GPU, cheap enough for a live dashboard tick; ``()`` without one.

    Args:
        nvml: The NVML library to ask; the process-wide one by default.
    """
    library = nvml if nvml is not None else default_library()
    count = _as_int(library.query("nvmlDeviceGetCount"))
    if not count:
        return ()
    gpus = (_read_gpu(library, index) for index in range(count))
    return tuple(gpu for gpu in gpus if gpu is not None)


def sample_host() -> HostInfo:
    """A fresh reading of the host's CPU and memory."""
    # Imported here: the app imports this module before its first frame, and needs psutil only later.
    import psutil

    memory = psutil.virtual_memory()
    cpu_model, cpu_flags = _cpu_identity()
    return HostInfo(
        cpu_model=cpu_model,
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True) or 1,
        memory_total_bytes=int(memory.total),
        memory_available_bytes=int(memory.available),
        cpu_flags=cpu_flags,
        cpu_percent=float(psutil.cpu_percent(interval=None)),
    )


def target_from_snapshot(snapshot: HardwareSnapshot) -> HardwareTarget:
    """Plan for what was detected: the first GPU's model times the GPUs of that model, else the CPU."""
    if not snapshot.gpus:
        return HardwareTarget(
            kind="cpu",
            name=snapshot.host.cpu_model,
            count=1,
            memory_bytes=snapshot.host.memory_total_bytes,
            compute_capability=None,
            source="detected",
            catalog_entry=None,
            cpu_flags=snapshot.host.cpu_flags,
        )
    first = snapshot.gpus[0]
    same_model = [gpu for gpu in snapshot.gpus if gpu.name == first.name]
    entry = match_detected_name(first.name)
    # The smallest one bounds what fits on each (tensor parallelism splits evenly).
    totals = [gpu.memory_total_bytes for gpu in same_model if gpu.memory_total_bytes is not None]
    catalogue_memory = entry.memory_bytes if entry is not None else 0
    memory_bytes = min(totals) if totals else catalogue_memory
    compute_capability = first.compute_capability
    if compute_capability is None and entry is not None:
        compute_capability = entry.compute_capability
    return HardwareTarget(
        kind="gpu",
        name=first.name,
        count=len(same_model),
        memory_bytes=memory_bytes,
        compute_capability=compute_capability,
        source="detected",
        catalog_entry=entry,
    )


def target_from_spec(spec: str) -> HardwareTarget:
    """Plan for a catalogued box: ``"H100"``, ``"H100x2"``, ``"A100-80GBx4"``, ``"l40s x 2"`` ...

    Raises:
        engine.errors.HardwareError: Unknown GPU name or bad count; the one-line message suggests names.
    """
    model, count = parse_gpu_spec(spec)
    return HardwareTarget(
        kind="gpu",
        name=model.name,
        count=count,
        memory_bytes=model.memory_bytes,
        compute_capability=model.compute_capability,
        source="catalogue",
        catalog_entry=model,
    )


def _read_gpu(library: NvmlLibrary, index: int) -> GpuInfo | None:
    handle = library.query("nvmlDeviceGetHandleByIndex", index)
    if handle is None:
        return None  # lost or inaccessible: nothing about it can be read
    total, used, free = _memory(library, handle)
    utilization = library.query("nvmlDeviceGetUtilizationRates", handle)
    temperature_sensor = library.constant("NVML_TEMPERATURE_GPU")
    temperature = (
        library.query("nvmlDeviceGetTemperature", handle, temperature_sensor)
        if temperature_sensor is not None
        else None
    )
    return GpuInfo(
        index=index,
        name=_as_text(library.query("nvmlDeviceGetName", handle)) or f"NVIDIA GPU {index}",
        uuid=_as_text(library.query("nvmlDeviceGetUUID", handle)),
        compute_capability=_compute_capability(library.query("nvmlDeviceGetCudaComputeCapability", handle)),
        memory_total_bytes=total,
        memory_used_bytes=used,
        memory_free_bytes=free,
        utilization_percent=_as_float(getattr(utilization, "gpu", None)),
        memory_utilization_percent=_as_float(getattr(utilization, "memory", None)),
        temperature_c=_as_float(temperature),
        power_w=_milli_to_unit(library.query("nvmlDeviceGetPowerUsage", handle)),
        power_limit_w=_milli_to_unit(library.query("nvmlDeviceGetEnforcedPowerLimit", handle)),
        mig_mode=_mig_mode(library, handle),
    )


def _memory(library: NvmlLibrary, handle: Any) -> tuple[int | None, int | None, int | None]:
    # Version 2 reports the driver's reserved memory apart from "used", as nvidia-smi does;
    # older drivers only have version 1.
    version_2 = library.constant("nvmlMemory_v2")
    info = library.query("nvmlDeviceGetMemoryInfo", handle, version_2) if version_2 is not None else None
    if info is None:
        info = library.query("nvmlDeviceGetMemoryInfo", handle)
    return (
        _as_int(getattr(info, "total", None)),
        _as_int(getattr(info, "used", None)),
        _as_int(getattr(info, "free", None)),
    )


def _mig_mode(library: NvmlLibrary, handle: Any) -> bool | None:
    modes = library.query("nvmlDeviceGetMigMode", handle)  # [current, pending]
    enabled = library.constant("NVML_DEVICE_MIG_ENABLE")
    if not isinstance(modes, (list, tuple)) or not modes or enabled is None:
        return None
    return bool(modes[0] == enabled)


def _cuda_driver_version(library: NvmlLibrary) -> str | None:
    version = _as_int(library.query("nvmlSystemGetCudaDriverVersion_v2"))
    if version is None:
        version = _as_int(library.query("nvmlSystemGetCudaDriverVersion"))
    if not version:
        return None
    return f"{version // 1000}.{version % 1000 // 10}"  # 12040 → "12.4"


def _gpu_status(library: NvmlLibrary, gpus: tuple[GpuInfo, ...]) -> str:
    status = library.status()
    if status != NVML_OK:
        return status
    if not gpus:
        count = _as_int(library.query("nvmlDeviceGetCount"))
        if count:
            return f"NVML sees {count} NVIDIA GPU(s) but none could be read (lost, or no permission)"
        return "NVML found no NVIDIA GPU"
    return NVML_OK


def _compute_capability(value: Any) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(part, int) for part in value):
        return (value[0], value[1])
    return None


def _cpu_identity() -> tuple[str, frozenset[str]]:
    """CPU model name and backend-relevant flags of this machine."""
    model, flags = None, frozenset[str]()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            model, flags = parse_cpuinfo(_first_processor_block(_PROC_CPUINFO))
    # QUANT_TUI_CPU_ISA=avx2 (tests of an AVX2 host on an AVX-512 one) hides AVX-512 and AMX.
    return model or platform.processor() or platform.machine() or "unknown CPU", visible_cpu_flags(flags)


def _first_processor_block(path: Path) -> str:
    # All cores of a host share one model, and a many-core /proc/cpuinfo is large: read one block.
    lines: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as cpuinfo:
        for line in cpuinfo:
            if not line.strip() and lines:
                break
            lines.append(line)
    return "".join(lines)


def parse_cpuinfo(text: str) -> tuple[str | None, frozenset[str]]:
    """The CPU model and the :data:`CPU_BACKEND_FLAGS` present, from Linux ``/proc/cpuinfo`` text.

    x86 names the model in ``model name`` and lists ``flags``; Arm lists ``Features`` and often names
    no model at all (then the model is ``None``). Only the first processor's fields are read.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if separator:
            fields.setdefault(key.strip().lower(), value.strip())
    model = fields.get("model name") or fields.get("hardware") or None
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return model, frozenset(flags & CPU_BACKEND_FLAGS)


def _as_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_float(value: Any) -> float | None:
    number = _as_int(value)
    if number is None and isinstance(value, float):
        return value
    return None if number is None else float(number)


def _milli_to_unit(value: Any) -> float | None:
    milli = _as_int(value)
    return None if milli is None else milli / 1000.0
