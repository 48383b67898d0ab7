"""A run's output folder: staged hidden next to the target, published by one rename, removed on failure; peak RSS."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from engine.errors import QuantTuiError
from engine.quantize.tensor_plan import PARTIAL_MARKER

_RSS_SAMPLE_SECONDS = 0.05


class QuantizeCancelled(QuantTuiError):
    """The run was cancelled; nothing was left on disk."""


class PeakRss:
    """Samples this process's resident memory in a background thread and keeps the highest value."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="quantize-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(_RSS_SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> int:
        """Reads the current RSS, updating and returning the peak."""
        with contextlib.suppress(Exception):
            self.peak = max(self.peak, self._process.memory_info().rss)
        return self.peak

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def partial_folder(output: Path) -> Path:
    """The hidden folder a run writing ``output`` stages its files in."""
    return output.parent / f".{output.name}{PARTIAL_MARKER}{os.getpid()}"


def remove_stale_partials(output: Path) -> list[Path]:
    """Deletes staging folders left next to ``output`` by runs that were killed; returns them."""
    import psutil

    removed: list[Path] = []
    if not output.parent.is_dir():
        return removed
    for candidate in output.parent.glob(f".{output.name}{PARTIAL_MARKER}*"):
        pid_text = candidate.name.rsplit(PARTIAL_MARKER, 1)[-1]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not psutil.pid_exists(int(pid_text)):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


@contextlib.contextmanager
def staging_folder(output: Path) -> Iterator[Path]:
    """A hidden folder next to ``output``, removed (with any parents it created) unless published."""
    created: list[Path] = []
    parent = output.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(output)
    staging = partial_folder(output)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def publish(staging: Path, output: Path) -> None:
    """Renames the finished staging folder to its final name (atomic on one filesystem)."""
    if output.exists():
        raise QuantTuiError(f"output folder {output} appeared while quantizing; remove it or pass --out")
    os.rename(staging, output)
    with contextlib.suppress(OSError):
        fd = os.open(output.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
