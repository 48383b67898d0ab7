"""Ties a child server's life to this process: stopped at exit, on SIGTERM/SIGHUP, and by a watchdog if killed."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from engine.process.child import spawn_watchdog, stop_watchdog

__all__ = ["ExitGuard"]


class ExitGuard:
    """Calls ``stop`` when this process exits or is told to end, and leaves a watchdog for a hard kill."""

    def __init__(self, stop: Callable[[], None]) -> None:
        """Prepares the guard; nothing is installed until :meth:`arm`.

        Args:
            stop: stops the server (called at most once per arm, from any thread or a signal handler).
        """
        self._stop = stop
        self._previous_handlers: dict[int, Any] = {}
        self._watchdog: subprocess.Popen[bytes] | None = None

    def arm(self, pid: int) -> None:
        """Guards the process group led by ``pid``: atexit, SIGTERM/SIGHUP handlers and a detached watchdog."""
        atexit.register(self._stop_at_exit)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGHUP):
                with contextlib.suppress(ValueError, OSError):
                    self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        self._watchdog = spawn_watchdog(pid)

    def disarm(self) -> None:
        """Removes what :meth:`arm` installed and ends the watchdog. Safe to call twice."""
        with contextlib.suppress(Exception):
            atexit.unregister(self._stop_at_exit)
        for signum, previous in list(self._previous_handlers.items()):
            # Only put the old handler back if nobody installed one on top of ours since.
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(signum) == self._on_signal:
                    signal.signal(signum, previous)
        self._previous_handlers.clear()
        watchdog, self._watchdog = self._watchdog, None
        stop_watchdog(watchdog)

    def _stop_at_exit(self) -> None:
        self._stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        self._stop()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
