"""Polls a vLLM server's ``/metrics`` (never two polls at once) into per-tick snapshots kept in a bounded history."""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from engine.serve import client as server_client
from engine.telemetry.derived_metrics import DerivedMetrics, derive
from engine.telemetry.errors import TelemetryError
from engine.telemetry.export import write_csv, write_json
from engine.telemetry.history import TelemetryHistory
from engine.telemetry.metrics import MetricsError, MetricsSample, parse_metrics
from engine.telemetry.processes import ProcessTreeSampler, gpu_memory_by_pid, vllm_pids
from engine.telemetry.snapshot import TelemetrySnapshot

if TYPE_CHECKING:
    from engine.hardware.detect import GpuInfo, HostInfo

__all__ = ["DEFAULT_HISTORY", "DEFAULT_INTERVAL_S", "MIN_INTERVAL_S", "TelemetryError", "TelemetryPoller"]

DEFAULT_INTERVAL_S = 1.0
DEFAULT_HISTORY = 600
MIN_INTERVAL_S = 0.05
# Slice of the wait between polls, so a stop or an interval change is seen quickly.
_WAIT_SLICE_S = 0.1


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
            ServerClientError: Bad URL.
            TelemetryError: Bad interval or history size.
        """

        if history < 1:
            raise TelemetryError(f"history must hold at least one tick, not {history}")
        self.url = server_client.metrics_url(url)
        self._interval_s = self._checked_interval(interval_s)
        self.server_pid = server_pid
        self.sample_hardware = sample_hardware
        self.timeout_s = timeout_s if timeout_s is not None else min(max(interval_s, 2.0), 10.0)
        self._client = httpx.Client(
            headers=server_client.auth_headers(api_key), timeout=self.timeout_s, follow_redirects=True
        )
        self._poll_lock = threading.Lock()
        self._history_lock = threading.Lock()
        self._history = TelemetryHistory(history)
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
            ServerClientError: Bad URL.
        """
        new_url = server_client.metrics_url(url)
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
            return None, server_client.describe_http_failure(error, self.url, self.timeout_s)
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
            return self._history.series()

    def export_json(self, path: str | os.PathLike[str]) -> Path:
        """Writes the history's snapshots as a JSON list (atomically).

        Args:
            path: The file to write.

        Returns:
            The path written.
        """
        return write_json(self.snapshots(), path)

    def export_csv(self, path: str | os.PathLike[str]) -> Path:
        """Writes the history as CSV, one row per tick: time, error and every derived figure.

        Args:
            path: The file to write.

        Returns:
            The path written.
        """
        return write_csv(self.snapshots(), path)
