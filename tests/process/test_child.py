"""ChildProcess: lines out, cancel and stop end the whole group, and the watchdog ends it when the parent is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from engine.process.child import ChildProcess
from tests.process_tree import alive, wait_gone

REPO = Path(__file__).resolve().parents[2]
# A leader that prints the pid of a grandchild it started in the same group, then sleeps.
_LEADER = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("child", child.pid, flush=True)
    time.sleep(600)
    """
)


def test_lines_and_exit_status() -> None:
    with ChildProcess([sys.executable, "-c", "print('one'); print('two'); raise SystemExit(3)"]) as child:
        assert [line.strip() for line in child.lines()] == ["one", "two"]
        assert child.wait() == 3


@pytest.mark.parametrize("how", ["stop", "cancel"])
def test_stop_and_cancel_end_the_whole_group(how: str) -> None:
    cancel = threading.Event()
    child = ChildProcess([sys.executable, "-c", _LEADER], cancel=cancel)
    grandchild = int(next(child.lines()).split()[1])
    pids = [child.pid, grandchild]
    assert alive(pids) == pids
    if how == "stop":
        child.stop()
    else:
        cancel.set()
    assert wait_gone(pids, 15) == []
    assert child.cancelled is (how == "cancel")
    child.stop()  # twice is fine


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP])
def test_killed_parent_leaves_nothing(signum: int) -> None:
    """A parent that dies by any signal, even SIGKILL, takes its child's group and the watchdog with it."""
    parent_code = textwrap.dedent(
        f"""
        import sys, time
        from engine.process.child import ChildProcess
        child = ChildProcess([sys.executable, "-c", {_LEADER!r}])
        print(child.pid, next(child.lines()).split()[1], child._watchdog.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    assert parent.stdout is not None
    pids = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(pids) == 3 and alive(pids) == pids
    os.kill(parent.pid, signum)
    parent.wait(10)
    try:
        assert wait_gone(pids, 15) == []
    finally:
        for pid in alive(pids):
            os.kill(pid, signal.SIGKILL)
