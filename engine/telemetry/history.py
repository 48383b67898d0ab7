"""The telemetry history: bounded ring buffers of snapshots and of each plotted series."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from engine.telemetry.snapshot import SERIES_NAMES, TelemetrySnapshot

__all__ = ["TelemetryHistory", "series_of"]


class TelemetryHistory:
    """The last ``size`` snapshots and each plotted series over them (not thread-safe: lock around it)."""

    def __init__(self, size: int) -> None:
        """Empty buffers of ``size`` ticks each."""
        self.size = size
        self.snapshots: deque[TelemetrySnapshot] = deque(maxlen=size)
        self.times: deque[float] = deque(maxlen=size)
        self.values: dict[str, deque[float | None]] = {name: deque(maxlen=size) for name in SERIES_NAMES}

    def append(self, snapshot: TelemetrySnapshot) -> None:
        """Adds one tick, dropping the oldest once full."""
        self.snapshots.append(snapshot)
        self.times.append(snapshot.wall_time)
        for name, value in snapshot.series_values().items():
            self.values[name].append(value)

    def series(self) -> dict[str, list[float | None]]:
        """Each plotted series (oldest first), plus ``wall_time``."""
        data: dict[str, list[float | None]] = {"wall_time": list(self.times)}
        data.update({name: list(values) for name, values in self.values.items()})
        return data


def series_of(snapshots: Iterable[TelemetrySnapshot]) -> dict[str, list[float | None]]:
    """The series a poller would hold after taking ``snapshots`` (as ``TelemetryPoller.series``).

    Args:
        snapshots: Oldest first.
    """
    ticks = list(snapshots)
    history = TelemetryHistory(max(1, len(ticks)))
    for snapshot in ticks:
        history.append(snapshot)
    return history.series()
