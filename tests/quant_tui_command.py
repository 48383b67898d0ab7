"""Test helpers: the real ``quant-tui`` command in its own session, and ``quant-tui serve`` until it prints its URL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUANT_TUI = [sys.executable, "-m", "tui.cli"]
# What `quant-tui serve` prints once the server answers /health: "vLLM is serving NAME at URL (ready in N s)".
SERVING = "vLLM is serving "


def start_quant_tui(args: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Starts ``quant-tui ARGS`` with stdout and stderr on one text pipe.

    Its own session, like a login shell's job: a signal to its group reaches nothing of the caller's.
    """
    return subprocess.Popen(
        [*QUANT_TUI, *args],
        cwd=REPO,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


class Output:
    """Reads a process's output in a thread (so the pipe never fills) and waits for a line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        """Starts reading ``process.stdout``; :attr:`lines` grows until it closes."""
        assert process.stdout is not None
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._closed = False
        self._stdout = process.stdout
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def text(self) -> str:
        """Everything read so far."""
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, prefix: str, timeout: float) -> str | None:
        """The first line starting with ``prefix``, waiting up to ``timeout`` s; ``None`` if it never came."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: self._closed or any(line.startswith(prefix) for line in self.lines), timeout
            )
            if not found:
                return None
            return next((line for line in self.lines if line.startswith(prefix)), None)

    def wait_closed(self, timeout: float = 10) -> str:
        """Waits up to ``timeout`` s for the pipe to close (the process ended); returns everything read."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed, timeout)
            return "".join(self.lines)


def serving_url(line: str) -> str:
    """The URL in ``quant-tui serve``'s "vLLM is serving NAME at URL (ready in N s)" line."""
    return line.split(" at ", 1)[1].split()[0]


def wait_serving(output: Output, timeout: float = 300) -> str:
    """Waits for ``quant-tui serve`` to print its URL; returns it.

    Raises:
        AssertionError: it ended or timed out first (with everything it printed).
    """
    line = output.wait_for(SERVING, timeout)
    if line is None:
        raise AssertionError(f"`quant-tui serve` printed no URL within {timeout:.0f} s:\n{output.text}")
    return serving_url(line)


def interrupt(process: subprocess.Popen[str], timeout: float = 60) -> None:
    """Ctrl-C to the command's group (its clean stop), then waits; SIGKILL if it does not end in time."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@contextlib.contextmanager
def quant_tui_serve(
    args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 300
) -> Iterator[tuple[subprocess.Popen[str], Output, str]]:
    """Runs ``quant-tui serve ARGS`` until it serves; yields the process, its output and the URL.

    Leaving the block stops it with Ctrl-C (and waits), whatever happened inside.
    """
    process = start_quant_tui(["serve", *args], env)
    try:
        output = Output(process)
        url = wait_serving(output, timeout)
        yield process, output, url
    finally:
        interrupt(process)
