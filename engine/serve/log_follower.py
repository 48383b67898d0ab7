"""Follows a server's log file in a background thread: the last lines in memory and a callback per line."""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["LOG_TAIL_LINES", "LogFollower", "read_log_lines"]

LOG_TAIL_LINES = 400
# How long the follower sleeps when the log file has nothing new.
_POLL_S = 0.1


def _last_redraw(line: str) -> str:
    """tqdm redraws a line with carriage returns: its last state."""
    return line.rstrip("\r").rsplit("\r", 1)[-1]


def read_log_lines(path: Path) -> list[str] | None:
    """The whole log file as lines (each at its last redraw); ``None`` when it cannot be read."""
    try:
        # Bytes, not read_text(): universal newlines would turn a redraw's carriage return into a line.
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [_last_redraw(line) for line in lines]


class LogFollower:
    """Reads a log file as a child process writes it, until the writer exits or :meth:`stop` is called."""

    def __init__(
        self,
        path: Path,
        writer_exited: Callable[[], bool],
        on_line: Callable[[str], None] | None = None,
        tail_lines: int = LOG_TAIL_LINES,
    ) -> None:
        """Prepares the follower; nothing is read until :meth:`start`.

        Args:
            path: the log file (it must exist).
            writer_exited: whether the process writing the file has exited (then one last read).
            on_line: called with each line, from the follower's thread; its errors are ignored.
            tail_lines: how many of the last lines :attr:`tail` keeps.
        """
        self.path = path
        self._writer_exited = writer_exited
        self._on_line = on_line
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._tail_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def tail(self) -> list[str]:
        """The last lines read (a copy)."""
        with self._tail_lock:
            return list(self._tail)

    def start(self) -> None:
        """Starts following in a daemon thread."""
        self._thread = threading.Thread(target=self._follow, name="vllm-log", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Waits up to ``timeout`` seconds for the follower to finish on its own (the writer exited)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self, timeout: float = 2) -> None:
        """Stops following and waits up to ``timeout`` seconds for the thread."""
        self._stop.set()
        self.join(timeout)

    def catch_up(self) -> None:
        """Gives the follower a moment to read what was written so far."""
        if self._thread is not None:
            time.sleep(_POLL_S * 2)

    def _follow(self) -> None:
        with open(self.path, "rb") as log:
            pending = b""
            while True:
                chunk = log.read(65536)
                if chunk:
                    pending = self._take_lines(pending + chunk)
                    continue
                if self._stop.is_set():
                    break
                if self._writer_exited():
                    # One last read after the exit, then stop following.
                    pending = self._take_lines(pending + log.read())
                    break
                self._stop.wait(_POLL_S)
            if pending:
                self._emit(pending.decode("utf-8", errors="replace"))

    def _take_lines(self, data: bytes) -> bytes:
        *lines, rest = data.split(b"\n")
        for raw in lines:
            self._emit(raw.decode("utf-8", errors="replace"))
        return rest

    def _emit(self, line: str) -> None:
        line = _last_redraw(line)
        with self._tail_lock:
            self._tail.append(line)
        if self._on_line is not None:
            with contextlib.suppress(Exception):
                self._on_line(line)
