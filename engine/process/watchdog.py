"""A tiny detached process that kills a vLLM server's process group once the app that started it is gone."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence

import psutil

# How often the parent is checked, and how long the group gets between SIGTERM and SIGKILL.
POLL_S = 0.5
GRACE_S = 5.0


def parent_alive(parent: psutil.Process) -> bool:
    """Whether the app is still the same running (not zombie) process.

    psutil's identity check compares the start time counted from boot, which a step of the wall
    clock (NTP, a resumed VM) leaves alone; the start time in seconds since the epoch moves with such
    a step, and comparing that once made the watchdog kill the server of an app that was still running.
    """
    try:
        return parent.is_running() and parent.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is left in the group.

    Zombies count as gone: an orphan's zombie waits for init to reap it, which some container
    inits never do, and it holds no memory or port.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    for process in psutil.process_iter(["status"]):
        try:
            if process.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(process.pid) == pgid:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def kill_group(pgid: int, grace_s: float = GRACE_S) -> None:
    """SIGTERM to the group, then SIGKILL to whatever is left after ``grace_s`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def watch(parent: psutil.Process | None, pgid: int, poll_s: float = POLL_S) -> int:
    """Polls until the group is gone (nothing left to guard) or the parent died (then kills the group).

    ``parent`` is ``None`` when the app was already gone as the watchdog started.
    """
    while group_alive(pgid):
        if parent is None or not parent_alive(parent):
            kill_group(pgid)
            return 0
        time.sleep(poll_s)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m engine.process.watchdog --parent PID --pgid PGID``."""
    parser = argparse.ArgumentParser(prog="python -m engine.process.watchdog", description=__doc__)
    parser.add_argument("--parent", type=int, required=True, help="the app's process id")
    parser.add_argument("--pgid", type=int, required=True, help="the server's process group id")
    parser.add_argument("--poll", type=float, default=POLL_S, help="seconds between checks")
    args = parser.parse_args(argv)
    # Ignore the terminal's signals: this process must outlive a closed terminal to do its job.
    for signum in (signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    return watch(_parent_process(args.parent), args.pgid, args.poll)


def _parent_process(pid: int) -> psutil.Process | None:
    """The app as a psutil process (its identity from now on), or ``None`` if it is gone already."""
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


if __name__ == "__main__":
    sys.exit(main())
