"""What one telemetry poll saw (``TelemetrySnapshot``), and the values of the series the dashboard plots."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.telemetry.derived_metrics import DerivedMetrics
from engine.telemetry.processes import ProcessSample

if TYPE_CHECKING:
    from engine.hardware.detect import GpuInfo, HostInfo

__all__ = ["SERIES_NAMES", "TelemetrySnapshot"]

# The time series the dashboard plots, one ring buffer each (``None`` where a tick had no value).
SERIES_NAMES = (
    "generation_tokens_per_s",
    "prompt_tokens_per_s",
    "requests_running",
    "requests_waiting",
    "kv_cache_usage",
    "kv_cache_capacity_tokens",
    "prefix_cache_hit_rate",
    "preemptions_total",
    "preemptions_per_s",
    "ttft_p50_s",
    "ttft_p95_s",
    "itl_p50_s",
    "itl_p95_s",
    "e2e_p50_s",
    "e2e_p95_s",
    "server_rss_bytes",
    "host_cpu_percent",
    "host_memory_used_bytes",
    "gpu_memory_used_bytes",
    "gpu_utilization_percent",
    "gpu_power_w",
    "gpu_temperature_c",
)


def _jsonable(value: Any) -> Any:
    """Dataclasses (GPU and host samples), tuples and sets as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: _jsonable(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, frozenset | set):
        return sorted(_jsonable(item) for item in value)
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _number(value: Any) -> float | None:
    """A finite number, or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _known(values: list[Any]) -> list[float]:
    return [number for number in map(_number, values) if number is not None]


def _total(values: list[Any]) -> float | None:
    """Sum of the known values; ``None`` when none is known."""
    known = _known(values)
    return sum(known) if known else None


def _mean(values: list[Any]) -> float | None:
    """Mean of the known values; ``None`` when none is known."""
    known = _known(values)
    return sum(known) / len(known) if known else None


def _highest(values: list[Any]) -> float | None:
    """Largest known value; ``None`` when none is known."""
    known = _known(values)
    return max(known) if known else None


@dataclass(frozen=True)
class TelemetrySnapshot:
    """What one poll saw; a failed poll is a snapshot with ``error`` set, never an exception.

    Attributes:
        url: The ``/metrics`` URL polled.
        wall_time: ``time.time()`` at the start of the poll.
        taken_at: ``time.monotonic()`` at the start of the poll.
        poll_s: How long the poll took.
        metrics: The derived vLLM figures, ``None`` when the poll failed.
        gpus: One sample per NVIDIA GPU (empty without NVML).
        host: CPU and RAM of this machine, ``None`` when not sampled.
        server_rss_bytes: Resident memory of the server's process tree when its pid is known.
        server_alive: Whether the server process still runs; ``None`` when no pid was given.
        error: One line saying why the poll failed, else ``None``.
        server_processes: The server's process tree (root first) when its pid is known.
        server_gpu_memory_bytes: Per GPU (as ``gpus``), the memory the server's processes hold there;
            ``None`` where NVML does not list processes.
        engine_died: Whether the server's main process or its engine core ended while watched.
    """

    url: str
    wall_time: float
    taken_at: float
    poll_s: float
    metrics: DerivedMetrics | None
    gpus: tuple[GpuInfo, ...] = ()
    host: HostInfo | None = None
    server_rss_bytes: int | None = None
    server_alive: bool | None = None
    error: str | None = None
    server_processes: tuple[ProcessSample, ...] = ()
    server_gpu_memory_bytes: tuple[int | None, ...] = ()
    engine_died: bool = False

    @property
    def ok(self) -> bool:
        """Whether the metrics were read."""
        return self.error is None and self.metrics is not None

    def series_values(self) -> dict[str, float | None]:
        """This tick's value for each of :data:`SERIES_NAMES`."""
        values: dict[str, float | None] = dict.fromkeys(SERIES_NAMES)
        if self.metrics is not None:
            for name in SERIES_NAMES:
                if hasattr(self.metrics, name):
                    values[name] = _number(getattr(self.metrics, name))
        values["server_rss_bytes"] = _number(self.server_rss_bytes)
        if self.host is not None:
            values["host_cpu_percent"] = _number(self.host.cpu_percent)
            values["host_memory_used_bytes"] = float(
                self.host.memory_total_bytes - self.host.memory_available_bytes
            )
        values["gpu_memory_used_bytes"] = _total([gpu.memory_used_bytes for gpu in self.gpus])
        values["gpu_utilization_percent"] = _mean([gpu.utilization_percent for gpu in self.gpus])
        values["gpu_power_w"] = _total([gpu.power_w for gpu in self.gpus])
        values["gpu_temperature_c"] = _highest([gpu.temperature_c for gpu in self.gpus])
        return values

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the snapshot."""
        return {
            "url": self.url,
            "wall_time": self.wall_time,
            "poll_s": self.poll_s,
            "error": self.error,
            "metrics": _jsonable(self.metrics.to_dict()) if self.metrics is not None else None,
            "gpus": _jsonable(self.gpus),
            "host": _jsonable(self.host),
            "server_rss_bytes": self.server_rss_bytes,
            "server_alive": self.server_alive,
            "server_processes": _jsonable(self.server_processes),
            "server_gpu_memory_bytes": list(self.server_gpu_memory_bytes),
            "engine_died": self.engine_died,
        }
