"""Live telemetry of a vLLM server: a non-overlapping ``/metrics`` poller, per-tick snapshots, ring buffers, export."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from engine.errors import QuantTuiError
from engine.serve import client as server_client
from engine.telemetry.metrics import DerivedMetrics, MetricsError, MetricsSample, derive, parse_metrics
from engine.telemetry.processes import ProcessSample, ProcessTreeSampler, gpu_memory_by_pid, vllm_pids

if TYPE_CHECKING:
    from engine.hardware.detect import GpuInfo, HostInfo

__all__ = [
    "SERIES_NAMES",
    "TelemetryError",
    "TelemetryPoller",
    "TelemetrySnapshot",
    "metrics_url",
    "process_tree_rss",
    "series_of",
]

DEFAULT_INTERVAL_S = 1.0
DEFAULT_HISTORY = 600
MIN_INTERVAL_S = 0.05
# Slice of the wait between polls, so a stop or an interval change is seen quickly.
_WAIT_SLICE_S = 0.1

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


class TelemetryError(QuantTuiError):
    """The telemetry cannot be set up as asked (bad URL or interval)."""


def metrics_url(url: str) -> str:
    """The ``/metrics`` address of a server given by its base URL, its ``/v1`` URL or ``/metrics`` itself.

    Args:
        url: ``http://host:port``, ``host:port``, ``http://host:port/v1`` or ``.../metrics``.

    Returns:
        The full ``/metrics`` URL.

    Raises:
        TelemetryError: The URL is empty or not http(s).
    """
    try:
        return server_client.metrics_url(url)
    except server_client.ServerClientError as error:
        raise TelemetryError(str(error)) from error


def process_tree_rss(pid: int) -> int | None:
    """Resident memory of a process and all its descendants, in bytes; ``None`` when it is gone.

    Args:
        pid: The process id of the server (vLLM forks an engine core and workers under it).
    """
    import psutil

    try:
        root = psutil.Process(pid)
        if root.status() == psutil.STATUS_ZOMBIE:
            return None
        processes = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # a worker that exited between the listing and the read
    return total


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


@dataclass
class _History:
    """Bounded ring buffers of snapshots and plotted series."""

    size: int
    snapshots: deque[TelemetrySnapshot] = field(init=False)
    times: deque[float] = field(init=False)
    series: dict[str, deque[float | None]] = field(init=False)

    def __post_init__(self) -> None:
        self.snapshots = deque(maxlen=self.size)
        self.times = deque(maxlen=self.size)
        self.series = {name: deque(maxlen=self.size) for name in SERIES_NAMES}

    def append(self, snapshot: TelemetrySnapshot) -> None:
        self.snapshots.append(snapshot)
        self.times.append(snapshot.wall_time)
        for name, value in snapshot.series_values().items():
            self.series[name].append(value)


def _describe_http_failure(error: Exception, url: str, timeout_s: float) -> str:
    """One line for a failed HTTP request; a server error says what it most likely means, not a bare 500."""
    if isinstance(error, httpx.HTTPStatusError) and error.response.status_code >= 500:
        return (
            f"{url} answered HTTP {error.response.status_code}: the server is up but failing "
            "(its engine may have died); its log says why"
        )
    return server_client.describe_http_failure(error, url, timeout_s)


class TelemetryPoller:
    """Polls a vLLM server's ``/metrics``, never two polls at once, and keeps a bounded history.

    Use :meth:`poll_once` from your own loop, or :meth:`run` in a thread. The history (ring buffers
    of the last ``history`` ticks) can be read at any time and exported with :meth:`export_csv` and
    :meth:`export_json`.
    """

    def __init__(
        self,
        url: str,
        interval_s: float = DEFAULT_INTERVAL_S,
        api_key: str | None = None,
        server_pid: int | None = None,
        history: int = DEFAULT_HISTORY,
        timeout_s: float | None = None,
        sample_hardware: bool = True,
    ) -> None:
        """Prepare a poller; nothing is contacted until the first poll.

        Args:
            url: The server's base URL (``http://host:port``), its ``/v1`` URL or its ``/metrics`` URL.
            interval_s: Seconds between the start of one poll and the next (never overlapping).
            api_key: Sent as ``Authorization: Bearer <key>`` when the server needs one.
            server_pid: The server's process id, to sample its process tree's memory and notice its end.
            history: How many ticks the ring buffers keep.
            timeout_s: HTTP timeout per poll; defaults to the interval, between 2 and 10 seconds.
            sample_hardware: Whether to sample GPUs (NVML) and the host (psutil) each tick.

        Raises:
            TelemetryError: Bad URL, interval or history size.
        """

        if history < 1:
            raise TelemetryError(f"history must hold at least one tick, not {history}")
        self.url = metrics_url(url)
        self._interval_s = self._checked_interval(interval_s)
        self.server_pid = server_pid
        self.sample_hardware = sample_hardware
        self.timeout_s = timeout_s if timeout_s is not None else min(max(interval_s, 2.0), 10.0)
        self._client = httpx.Client(
            headers=server_client.auth_headers(api_key), timeout=self.timeout_s, follow_redirects=True
        )
        self._poll_lock = threading.Lock()
        self._history_lock = threading.Lock()
        self._history = _History(history)
        self._previous: MetricsSample | None = None
        self._tree = ProcessTreeSampler(server_pid) if server_pid is not None else None
        self._host: HostInfo | None = None

    @staticmethod
    def _checked_interval(interval_s: float) -> float:
        if not math.isfinite(interval_s) or interval_s < MIN_INTERVAL_S:
            raise TelemetryError(f"the poll interval must be at least {MIN_INTERVAL_S} s, not {interval_s}")
        return float(interval_s)

    @property
    def interval_s(self) -> float:
        """Seconds between polls; may be changed while :meth:`run` is going."""
        return self._interval_s

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        self._interval_s = self._checked_interval(value)

    def retarget(self, url: str, server_pid: int | None) -> None:
        """Watches another server from the next poll on (a restart), keeping the history.

        Args:
            url: The new server's base URL.
            server_pid: Its process id, when known.

        Raises:
            TelemetryError: Bad URL.
        """
        new_url = metrics_url(url)
        with self._poll_lock:
            self.url = new_url
            self.server_pid = server_pid
            self._tree = ProcessTreeSampler(server_pid) if server_pid is not None else None
            self._previous = None

    def close(self) -> None:
        """Closes the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> TelemetryPoller:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read_metrics(self, taken_at: float) -> tuple[DerivedMetrics | None, str | None]:
        """Fetches and derives the metrics; ``(None, reason)`` on failure."""

        try:
            response = self._client.get(self.url)
            response.raise_for_status()
            sample = parse_metrics(response.text, taken_at=taken_at)
        except MetricsError as error:
            return None, f"{self.url}: {error}"
        except httpx.HTTPError as error:
            return None, _describe_http_failure(error, self.url, self.timeout_s)
        derived = derive(self._previous, sample)
        self._previous = sample
        return derived, None

    def _sample_hardware(self) -> tuple[tuple[GpuInfo, ...], HostInfo | None, tuple[int | None, ...]]:
        if not self.sample_hardware:
            return (), None, ()
        from engine.hardware.detect import sample_gpus, sample_host
        from engine.hardware.nvml import default_library

        gpus = tuple(sample_gpus())
        server_memory: tuple[int | None, ...] = ()
        if gpus:
            # A server quant-tui started is its process tree; one it did not is whatever runs vLLM here.
            pids = self._tree.pids() if self._tree is not None else vllm_pids()
            by_pid = gpu_memory_by_pid(default_library(), len(gpus))
            server_memory = tuple(
                sum(used for pid, used in on_gpu.items() if pid in pids) if on_gpu or pids else None
                for on_gpu in by_pid
            )
        return gpus, self._sample_host(sample_host), server_memory

    def _sample_host(self, sample_host: Callable[[], HostInfo]) -> HostInfo:
        """The host's RAM and CPU now; its identity (model, cores, flags) is read once, not every tick."""
        import psutil

        if self._host is None:
            self._host = sample_host()
            return self._host
        return dataclasses.replace(
            self._host,
            memory_available_bytes=int(psutil.virtual_memory().available),
            cpu_percent=float(psutil.cpu_percent(interval=None)),
        )

    def poll_once(self) -> TelemetrySnapshot:
        """Polls now (waiting for a poll already under way) and records the snapshot in the history.

        Returns:
            The snapshot; when the server is unreachable, answers garbage or has died, its ``error``
            says so in one line and ``metrics`` is ``None``.
        """
        with self._poll_lock:
            wall_time, started = time.time(), time.monotonic()
            metrics, error = self._read_metrics(started)
            tree = self._tree.sample() if self._tree is not None else None
            rss = tree.rss_bytes if tree is not None else None
            alive = tree.root_alive if tree is not None else None
            died = tree is not None and tree.engine_died
            if died:
                # Said first and plainly: whatever the HTTP side answers now (refused, 500) follows from it.
                how = "exited" if not alive else "still runs without it"
                error = f"the vLLM engine process died (the server process, pid {self.server_pid}, {how})"
            gpus, host, server_gpu_memory = self._sample_hardware()
            snapshot = TelemetrySnapshot(
                url=self.url,
                wall_time=wall_time,
                taken_at=started,
                poll_s=time.monotonic() - started,
                metrics=metrics,
                gpus=gpus,
                host=host,
                server_rss_bytes=rss,
                server_alive=alive,
                error=error,
                server_processes=tree.processes if tree is not None else (),
                server_gpu_memory_bytes=server_gpu_memory,
                engine_died=died,
            )
            with self._history_lock:
                self._history.append(snapshot)
            return snapshot

    def run(self, on_snapshot: Callable[[TelemetrySnapshot], None], stop_event: threading.Event) -> None:
        """Polls until ``stop_event`` is set, calling ``on_snapshot`` after each poll.

        The next poll starts one interval after the previous one started, or right after it
        finished when it took longer: polls never overlap and a slow server is not piled on.

        Args:
            on_snapshot: Called in this thread with each snapshot, failed ones included.
            stop_event: Set it to stop; the wait between polls ends at once.
        """
        while not stop_event.is_set():
            snapshot = self.poll_once()
            on_snapshot(snapshot)
            while not stop_event.is_set():
                remaining = snapshot.taken_at + self._interval_s - time.monotonic()
                if remaining <= 0:
                    break
                stop_event.wait(min(remaining, _WAIT_SLICE_S))

    def snapshots(self) -> list[TelemetrySnapshot]:
        """The snapshots in the history, oldest first."""
        with self._history_lock:
            return list(self._history.snapshots)

    def series(self) -> dict[str, list[float | None]]:
        """Each plotted series over the history (oldest first), plus ``wall_time``."""
        with self._history_lock:
            data: dict[str, list[float | None]] = {"wall_time": list(self._history.times)}
            data.update({name: list(values) for name, values in self._history.series.items()})
            return data

    def export_json(self, path: str | os.PathLike[str]) -> Path:
        """Writes the history's snapshots as a JSON list (atomically).

        Args:
            path: The file to write.

        Returns:
            The path written.
        """
        payload = [snapshot.to_dict() for snapshot in self.snapshots()]
        return _write_atomically(Path(path), lambda handle: json.dump(payload, handle, indent=1))

    def export_csv(self, path: str | os.PathLike[str]) -> Path:
        """Writes the history as CSV, one row per tick: time, error and every derived figure.

        Args:
            path: The file to write.

        Returns:
            The path written.
        """
        snapshots = self.snapshots()
        columns = ["wall_time", "error", *SERIES_NAMES, *_scalar_metric_fields()]
        columns = list(dict.fromkeys(columns))

        def write(handle: Any) -> None:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in _csv_rows(snapshots):
                writer.writerow(row)

        return _write_atomically(Path(path), write)


def series_of(snapshots: list[TelemetrySnapshot]) -> dict[str, list[float | None]]:
    """The series a poller would hold after taking ``snapshots`` (as :meth:`TelemetryPoller.series`).

    Args:
        snapshots: Oldest first.
    """
    history = _History(max(1, len(snapshots)))
    for snapshot in snapshots:
        history.append(snapshot)
    data: dict[str, list[float | None]] = {"wall_time": list(history.times)}
    data.update({name: list(values) for name, values in history.series.items()})
    return data


def _scalar_metric_fields() -> list[str]:
    """The scalar fields of :class:`DerivedMetrics`, in declaration order."""
    return [item.name for item in dataclasses.fields(DerivedMetrics) if item.name not in _NON_SCALAR_FIELDS]


_NON_SCALAR_FIELDS = frozenset({"finished_requests", "finished_requests_in_window", "missing"})


def _csv_rows(snapshots: list[TelemetrySnapshot]) -> Iterator[Mapping[str, Any]]:
    for snapshot in snapshots:
        row: dict[str, Any] = {"wall_time": snapshot.wall_time, "error": snapshot.error or ""}
        row.update(snapshot.series_values())
        if snapshot.metrics is not None:
            for name in _scalar_metric_fields():
                row[name] = getattr(snapshot.metrics, name)
        yield {key: "" if value is None else value for key, value in row.items()}


def _write_atomically(path: Path, write: Callable[[Any], None]) -> Path:
    """Writes through a temporary file next to ``path`` and renames it, so no half file is left.

    Raises:
        TelemetryError: the folder or the file cannot be written (a full disk, no permission).
    """
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as handle:
            write(handle)
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise TelemetryError(
                f"cannot write the export {path} ({error.strerror or error}); free some space or pick another file"
            ) from None
        raise
    return path
