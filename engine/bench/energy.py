"""Energy a benchmark window used, from NVML's per-GPU energy counters: joules, joules per token, tokens per joule."""

from __future__ import annotations

from dataclasses import dataclass

from engine.hardware.nvml import NvmlLibrary, default_library

__all__ = ["EnergyMeter", "EnergyWindow"]

_NO_COUNTER = "not available: no GPU reports an energy counter (NVML nvmlDeviceGetTotalEnergyConsumption)"


@dataclass(frozen=True, slots=True)
class EnergyWindow:
    """The energy all GPUs drew over a window.

    Attributes:
        joules: Sum over the GPUs of their energy counters' increase; ``None`` when not available.
        gpus: GPUs that were read.
        not_available: Why there is no figure (``None`` when there is one), e.g. on a CPU-only host.
    """

    joules: float | None
    gpus: int = 0
    not_available: str | None = None

    def joules_per_token(self, tokens: int) -> float | None:
        """Energy per output token, when both are known."""
        return None if self.joules is None or tokens <= 0 else self.joules / tokens

    def tokens_per_joule(self, tokens: int) -> float | None:
        """Output tokens per joule, when both are known and the energy is not zero."""
        return None if not self.joules or tokens <= 0 else tokens / self.joules


class EnergyMeter:
    """Reads every GPU's energy counter (millijoules since the driver loaded) on enter and on exit.

    Use as a context manager around the timed run; :attr:`window` is set on exit. Counters exist on
    Volta and newer; a CPU-only host or an older GPU gives a window that says it is not available.
    """

    def __init__(self, nvml: NvmlLibrary | None = None) -> None:
        """Prepares the meter; nothing is read until ``__enter__``.

        Args:
            nvml: The NVML library to ask; the process-wide one by default.
        """
        self._nvml = nvml if nvml is not None else default_library()
        self._first: list[int | None] = []
        self.window: EnergyWindow | None = None

    def _read(self) -> list[int | None]:
        count = self._nvml.query("nvmlDeviceGetCount")
        if not isinstance(count, int):
            return []
        readings: list[int | None] = []
        for index in range(count):
            handle = self._nvml.query("nvmlDeviceGetHandleByIndex", index)
            value = (
                None if handle is None else self._nvml.query("nvmlDeviceGetTotalEnergyConsumption", handle)
            )
            readings.append(value if isinstance(value, int) else None)
        return readings

    def __enter__(self) -> EnergyMeter:
        self._first = self._read()
        return self

    def __exit__(self, *exc_info: object) -> None:
        last = self._read()
        if not self._first and not last:
            self.window = EnergyWindow(None, 0, f"not available: {self._nvml.status()}")
            return
        pairs = list(zip(self._first, last, strict=False))
        if not pairs or any(before is None or after is None for before, after in pairs):
            self.window = EnergyWindow(None, len(last), _NO_COUNTER)
            return
        millijoules = sum(
            after - before for before, after in pairs if before is not None and after is not None
        )
        self.window = EnergyWindow(millijoules / 1000.0, len(pairs))
