"""Writes telemetry snapshots to a JSON list or a CSV table, atomically (no half file on a full disk)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.telemetry.derived_metrics import DerivedMetrics
from engine.telemetry.errors import TelemetryError
from engine.telemetry.snapshot import SERIES_NAMES, TelemetrySnapshot

__all__ = ["write_csv", "write_json"]

_NON_SCALAR_FIELDS = frozenset({"finished_requests", "finished_requests_in_window", "missing"})


def write_json(snapshots: Sequence[TelemetrySnapshot], path: str | os.PathLike[str]) -> Path:
    """Writes the snapshots as a JSON list.

    Returns:
        The path written.

    Raises:
        TelemetryError: the folder or the file cannot be written.
    """
    payload = [snapshot.to_dict() for snapshot in snapshots]
    return _write_atomically(Path(path), lambda handle: json.dump(payload, handle, indent=1))


def write_csv(snapshots: Sequence[TelemetrySnapshot], path: str | os.PathLike[str]) -> Path:
    """Writes the snapshots as CSV, one row per tick: time, error, every plotted series and derived figure.

    Returns:
        The path written.

    Raises:
        TelemetryError: the folder or the file cannot be written.
    """
    columns = list(dict.fromkeys(["wall_time", "error", *SERIES_NAMES, *_scalar_metric_fields()]))

    def write(handle: Any) -> None:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in _csv_rows(snapshots):
            writer.writerow(row)

    return _write_atomically(Path(path), write)


def _scalar_metric_fields() -> list[str]:
    """The scalar fields of :class:`DerivedMetrics`, in declaration order."""
    return [item.name for item in dataclasses.fields(DerivedMetrics) if item.name not in _NON_SCALAR_FIELDS]


def _csv_rows(snapshots: Sequence[TelemetrySnapshot]) -> Iterator[Mapping[str, Any]]:
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
