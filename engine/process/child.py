"""A child process in its own process group that never outlives the app: watchdog, cancel, whole-group stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from engine.process.watchdog import group_alive

# The folder that holds the ``engine`` package, so ``python -m engine.process.watchdog`` resolves
# whatever the caller's working directory is.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def spawn_watchdog(pgid: int) -> subprocess.Popen[bytes] | None:
    """Starts the detached watchdog that kills group ``pgid`` once this process is gone.

    Returns ``None`` if it could not be started (the child still stops with the app on a clean exit).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.process.watchdog",
                "--parent",
                str(os.getpid()),
                "--pgid",
                str(pgid),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(_PACKAGE_ROOT),
            env=env,
        )
    except OSError:
        return None


def stop_watchdog(watchdog: subprocess.Popen[bytes] | None) -> None:
    """Ends a watchdog whose group ended on purpose (it would exit by itself, a moment later)."""
    if watchdog is None:
        return
    with contextlib.suppress(ProcessLookupError):
        watchdog.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        watchdog.wait(2)


def signal_group(pgid: int, signum: int) -> None:
    """Sends ``signum`` to every process of group ``pgid``; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def wait_group_gone(pgid: int, process: subprocess.Popen[Any], deadline: float) -> bool:
    """Waits until no live process is left in the group (reaping the leader), or ``deadline`` passes."""
    while time.monotonic() < deadline:
        process.poll()  # reap the leader so it does not linger as a zombie
        if not group_alive(pgid):
            return True
        time.sleep(0.1)
    process.poll()
    return not group_alive(pgid)


def stop_group(
    process: subprocess.Popen[Any],
    timeout: float,
    signals: Sequence[tuple[int, float]] = ((signal.SIGTERM, 1.0),),
) -> None:
    """Stops the group led by ``process``: each signal gets its share of ``timeout``, then SIGKILL."""
    pgid = process.pid
    for signum, share in signals:
        if not group_alive(pgid):
            break
        signal_group(pgid, signum)
        if wait_group_gone(pgid, process, time.monotonic() + timeout * share):
            break
    if group_alive(pgid):
        signal_group(pgid, signal.SIGKILL)
        wait_group_gone(pgid, process, time.monotonic() + 5)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


class ChildProcess:
    """A text-mode child in its own process group, guarded by a watchdog (a context manager).

    Leaving the ``with`` block, :meth:`stop`, a set ``cancel`` event and the death of this process
    (through the watchdog, even by SIGKILL) all end the child's whole group.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stderr: IO[str] | int | None = subprocess.STDOUT,
        cancel: threading.Event | None = None,
    ) -> None:
        """Starts the child at once, with stdout as a pipe of text lines.

        Args:
            argv: the command.
            env: its whole environment (default: this process's).
            cwd: its working folder.
            stderr: where its stderr goes (default: into stdout).
            cancel: set it to stop the child; :attr:`cancelled` then says so.
        """
        self.process: subprocess.Popen[str] = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd is not None else None,
            start_new_session=True,
        )
        self._watchdog = spawn_watchdog(self.process.pid)
        self._stopped = threading.Event()
        self.cancelled = False
        if cancel is not None:
            threading.Thread(target=self._stop_on, args=(cancel,), daemon=True).start()

    @property
    def pid(self) -> int:
        """The child's process id (also its process group id)."""
        return self.process.pid

    def lines(self) -> Iterator[str]:
        """The child's stdout, line by line, until it closes."""
        assert self.process.stdout is not None
        yield from self.process.stdout

    def wait(self) -> int:
        """Waits for the child to exit; returns its exit status."""
        return self.process.wait()

    def stop(self, timeout: float = 10) -> None:
        """Ends the whole group (SIGTERM, then SIGKILL) and the watchdog. Safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        stop_group(self.process, timeout)
        stop_watchdog(self._watchdog)
        self._watchdog = None
        if self.process.stdout is not None:
            with contextlib.suppress(OSError):
                self.process.stdout.close()

    def _stop_on(self, cancel: threading.Event) -> None:
        while not self._stopped.is_set():
            if cancel.wait(0.2):
                self.cancelled = True
                self.stop()
                return

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
