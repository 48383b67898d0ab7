"""The watchdog on real stand-in process groups: it ends a group whose parent died, exits when the group is gone, escalates to SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.process_tree import alive, wait_gone

REPO = Path(__file__).resolve().parents[2]

# A process group like vLLM's: a leader with a child, both ignoring SIGINT and SIGHUP as a detached
# server would; the child also ignores SIGTERM, so only SIGKILL ends it.
_GROUP_SCRIPT = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def _start_group() -> tuple[subprocess.Popen[str], list[int]]:
    leader = subprocess.Popen(
        [sys.executable, "-c", _GROUP_SCRIPT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    return leader, [leader.pid, child]


def test_watchdog_kills_the_group_when_the_parent_dies() -> None:
    from engine.process.watchdog import group_alive

    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    leader, pids = _start_group()
    watchdog = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.process.watchdog",
            "--parent",
            str(parent.pid),
            "--pgid",
            str(leader.pid),
            "--poll",
            "0.1",
        ],
        cwd=REPO,
        start_new_session=True,
    )
    try:
        time.sleep(1.0)
        assert alive(pids) == pids  # a live parent: nothing is touched
        parent.kill()  # a zombie until reaped below: the watchdog must see it as dead
        assert watchdog.wait(20) == 0
        leader.wait(5)
        assert wait_gone(pids, 5) == []
        assert not group_alive(leader.pid)
    finally:
        parent.wait()
        for process in (leader, watchdog):
            if process.poll() is None:
                process.kill()
                process.wait()
        for pid in alive(pids):
            os.kill(pid, signal.SIGKILL)


def test_watchdog_exits_when_the_group_is_gone() -> None:
    from engine.process.watchdog import watch

    leader, pids = _start_group()
    os.killpg(leader.pid, signal.SIGKILL)
    leader.wait(5)
    wait_gone(pids, 5)
    started = time.monotonic()
    assert watch(psutil.Process(), leader.pid, poll_s=0.05) == 0
    assert time.monotonic() - started < 2


def test_kill_group_escalates_to_sigkill() -> None:
    from engine.process.watchdog import kill_group

    leader, pids = _start_group()
    try:
        kill_group(leader.pid, grace_s=0.5)
        leader.wait(5)
        assert wait_gone(pids, 5) == []
    finally:
        for pid in alive(pids):
            os.kill(pid, signal.SIGKILL)


def test_parent_alive_follows_the_process_not_its_id() -> None:
    from engine.process.watchdog import parent_alive

    assert parent_alive(psutil.Process()) is True
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    watched = psutil.Process(ended.pid)
    ended.wait()
    assert parent_alive(watched) is False


def test_parent_alive_survives_a_step_of_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # /proc/stat's btime is the wall clock minus the uptime: an NTP step or a resumed VM moves it, and
    # with it the epoch start time psutil reports. The watchdog once compared that and killed the
    # server of an app that was still running (CI, 2026-12-03: 8 servers ended by SIGTERM/SIGKILL).
    from psutil import _pslinux

    from engine.process.watchdog import parent_alive

    if not sys.platform.startswith("linux"):
        pytest.skip("the boot time is read from /proc on Linux")
    me = psutil.Process()
    before = me.create_time()
    booted = _pslinux.boot_time()
    monkeypatch.setattr(_pslinux, "boot_time", lambda: booted + 1.0)
    assert psutil.Process().create_time() == pytest.approx(before + 1.0)  # the step is visible to psutil
    assert parent_alive(me) is True
