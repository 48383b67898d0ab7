"""A fake NVIDIA driver for tests: nvidia-ml-py's own module with its NVML entry points replaced.

The fakes return the binding's real ctypes structures and raise its real ``NVMLError`` subclasses;
every NVML function a test does not fake raises ``NVMLError_FunctionNotFound``, so a fake handle
never reaches a real driver.
"""

from __future__ import annotations

import atexit
import dataclasses
import inspect
import time
from collections.abc import Callable
from typing import Any

import pynvml
import pytest

MIB = 2**20


@dataclasses.dataclass
class FakeGpu:
    """What one fake device reports."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-1111-2222-3333-444444444444"
    compute_capability: tuple[int, int] = (9, 0)
    total_mib: int = 81559
    used_mib: int = 1024
    reserved_mib: int = 512
    utilization: tuple[int, int] = (37, 12)
    temperature_c: int = 41
    power_mw: int = 123_456
    power_limit_mw: int = 700_000
    mig_modes: list[int] | None = dataclasses.field(default_factory=lambda: [0, 0])


def nvml_error(code_name: str) -> pynvml.NVMLError:
    """A real pynvml error instance (``NVMLError(code)`` builds the matching subclass)."""
    return pynvml.NVMLError(getattr(pynvml, code_name))


class FakeNvml:
    """Replaces pynvml's NVML entry points with fakes describing ``gpus``; everything else raises."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, gpus: list[FakeGpu]) -> None:
        self.gpus = gpus
        self.handles = [pynvml.c_nvmlDevice_t() for _ in gpus]
        self.init_calls = 0
        self.shutdown_calls = 0
        self.init_error: BaseException | None = None
        self.init_delay_s = 0.0
        self.failing: dict[str, BaseException] = {}
        self.memory_v2_supported = True
        self.atexit_callbacks: list[Callable[[], object]] = []
        self._monkeypatch = monkeypatch
        monkeypatch.setattr(atexit, "register", self.atexit_callbacks.append)
        for name, value in vars(pynvml).items():
            if name.startswith("nvml") and inspect.isfunction(value):
                monkeypatch.setattr(pynvml, name, self._not_found)
        fakes: dict[str, Callable[..., Any]] = {
            "nvmlInit": self._init,
            "nvmlShutdown": self._shutdown,
            "nvmlDeviceGetCount": lambda: len(self.gpus),
            "nvmlDeviceGetHandleByIndex": self._handle,
            "nvmlDeviceGetName": lambda handle: self._gpu(handle).name,
            "nvmlDeviceGetUUID": lambda handle: self._gpu(handle).uuid,
            "nvmlDeviceGetCudaComputeCapability": lambda handle: self._gpu(handle).compute_capability,
            "nvmlDeviceGetMemoryInfo": self._memory,
            "nvmlDeviceGetUtilizationRates": self._utilization,
            "nvmlDeviceGetTemperature": self._temperature,
            "nvmlDeviceGetPowerUsage": lambda handle: self._gpu(handle).power_mw,
            "nvmlDeviceGetEnforcedPowerLimit": lambda handle: self._gpu(handle).power_limit_mw,
            "nvmlDeviceGetMigMode": self._mig_mode,
            "nvmlSystemGetDriverVersion": lambda: "550.54.15",
            "nvmlSystemGetCudaDriverVersion_v2": lambda: 12040,
            "nvmlSystemGetCudaDriverVersion": lambda: 12040,
        }
        for name, fake in fakes.items():
            self.install(name, fake)

    def install(self, name: str, fake: Callable[..., Any]) -> None:
        """Make ``pynvml.<name>`` call ``fake`` unless the test marked it as failing."""

        def call(*args: Any) -> Any:
            if name in self.failing:
                raise self.failing[name]
            return fake(*args)

        self._monkeypatch.setattr(pynvml, name, call)

    @staticmethod
    def _not_found(*_args: Any, **_kwargs: Any) -> Any:
        raise nvml_error("NVML_ERROR_FUNCTION_NOT_FOUND")

    def _init(self) -> None:
        self.init_calls += 1
        time.sleep(self.init_delay_s)
        if self.init_error is not None:
            raise self.init_error

    def _shutdown(self) -> None:
        self.shutdown_calls += 1

    def _handle(self, index: int) -> Any:
        if not 0 <= index < len(self.handles):
            raise nvml_error("NVML_ERROR_INVALID_ARGUMENT")
        return self.handles[index]

    def _gpu(self, handle: Any) -> FakeGpu:
        return self.gpus[next(i for i, known in enumerate(self.handles) if known is handle)]

    def _memory(self, handle: Any, version: int | None = None) -> Any:
        gpu = self._gpu(handle)
        if version is None:
            info = pynvml.c_nvmlMemory_t()
            info.used = (gpu.used_mib + gpu.reserved_mib) * MIB
        else:
            if not self.memory_v2_supported:
                raise nvml_error("NVML_ERROR_FUNCTION_NOT_FOUND")
            assert version == pynvml.nvmlMemory_v2
            info = pynvml.c_nvmlMemory_v2_t()
            info.version = version
            info.reserved = gpu.reserved_mib * MIB
            info.used = gpu.used_mib * MIB
        info.total = gpu.total_mib * MIB
        info.free = (gpu.total_mib - gpu.used_mib - gpu.reserved_mib) * MIB
        return info

    def _utilization(self, handle: Any) -> Any:
        gpu_percent, memory_percent = self._gpu(handle).utilization
        return pynvml.c_nvmlUtilization_t(gpu=gpu_percent, memory=memory_percent)

    def _temperature(self, handle: Any, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu(handle).temperature_c

    def _mig_mode(self, handle: Any) -> list[int]:
        modes = self._gpu(handle).mig_modes
        if modes is None:
            raise nvml_error("NVML_ERROR_NOT_SUPPORTED")
        return modes


# Two H100s: the first with MIG mode readable, the second busier and without MIG.
TWO_H100 = [
    FakeGpu(),
    FakeGpu(uuid="GPU-99999999-1111-2222-3333-444444444444", used_mib=60_000, mig_modes=None),
]
