"""One command in a detached 120×40 tmux session, for the dashboard benchmarks: its process, then a clean end."""

from __future__ import annotations

import subprocess
import time

import psutil


def start_in_tmux(session: str, command: str, settle_s: float = 0.0) -> psutil.Process:
    """Starts ``command`` (a shell line) as the pane of a new session ``session``; its pane process.

    A session left over with the same name (an earlier run that was killed) is ended first.
    """
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command], check=True)
    time.sleep(settle_s)
    pane_pid = subprocess.run(
        ["tmux", "display-message", "-p", "-t", session, "#{pane_pid}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return psutil.Process(int(pane_pid))


def quit_tmux(session: str, app: psutil.Process | None = None, wait_s: float = 0.0) -> None:
    """Presses ``q`` in the session, waits up to ``wait_s`` for ``app`` to end, then ends the session."""
    subprocess.run(["tmux", "send-keys", "-t", session, "q"], capture_output=True)
    deadline = time.monotonic() + wait_s
    while app is not None and time.monotonic() < deadline and app.is_running():
        time.sleep(0.2)
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
