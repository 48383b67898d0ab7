"""Test helpers: a process's tree of children, which of some processes are still alive, and ending one to check nothing stays."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable

import psutil

# The watchdog polls every 0.5 s and gives a group 5 s between SIGTERM and SIGKILL.
GONE_WITHIN_S = 20
# quant-tui itself, stopping a server cleanly first (SIGINT, SIGTERM, SIGKILL over 20 s) on a busy machine.
APP_ENDS_WITHIN_S = 60


def alive(pids: list[int]) -> list[int]:
    """The ids in ``pids`` of processes still running (not zombies)."""
    running = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            pass
    return running


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Waits up to ``timeout_s`` for every process in ``pids`` to end; returns those still alive."""
    deadline = time.monotonic() + timeout_s
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(pids)


def tree(pid: int) -> list[psutil.Process]:
    """Every descendant of ``pid`` now (an empty list once it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def cmdline(process: psutil.Process) -> str:
    """A process's command line as one string ("" once it is gone)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` still running (the same process, not a zombie, not a reused id)."""
    found = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def wait_running_gone(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Waits up to ``seconds`` for all of ``processes`` to end; returns those still running."""
    deadline = time.monotonic() + seconds
    while running(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    return running(processes)


def groups(processes: list[psutil.Process]) -> set[int]:
    """The process groups ``processes`` belong to (those still alive)."""
    found = set()
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            found.add(os.getpgid(process.pid))
    return found


def group_members(pgids: set[int]) -> list[psutil.Process]:
    """Every live process of these groups: children started after the tree was looked at count too."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) in pgids and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def wait_for_tree(
    pid: int, found: Callable[[list[psutil.Process]], bool], seconds: float, alive_check: Callable[[], bool]
) -> list[psutil.Process]:
    """Waits until ``found(tree)`` is true for ``pid``'s tree; returns that tree.

    Raises:
        AssertionError: ``alive_check()`` turned false first (the process ended), or time ran out.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert alive_check(), "quant-tui ended before the test could end it"
        children = tree(pid)
        if found(children):
            return children
        time.sleep(0.2)
    raise AssertionError(f"the expected child processes never appeared: {[cmdline(p) for p in tree(pid)]}")


def end_and_check(app: psutil.Process, end: Callable[[], None], children: list[psutil.Process]) -> None:
    """Ends the real quant-tui by ``end()``; asserts it, its ``children`` and their groups are gone in time.

    Whatever is left is killed afterwards, so a failure leaves nothing behind either.
    """
    pgids = groups(children) - {os.getpgid(os.getpid())}
    try:
        end()
        assert wait_running_gone([app], APP_ENDS_WITHIN_S) == [], "quant-tui itself did not end"
        left = wait_running_gone(children, GONE_WITHIN_S)
        assert [cmdline(p) or p.pid for p in left] == []
        assert [cmdline(p) or p.pid for p in group_members(pgids)] == []
    finally:
        for process in running([app, *children, *group_members(pgids)]):
            with contextlib.suppress(psutil.Error):
                process.kill()


def signal_and_check(app: subprocess.Popen[str], signum: int, children: list[psutil.Process]) -> None:
    """Sends ``signum`` to the real quant-tui (a child of the test); checks as :func:`end_and_check`."""
    try:
        end_and_check(psutil.Process(app.pid), lambda: os.kill(app.pid, signum), children)
    finally:
        if app.poll() is None:
            app.kill()
        app.wait(5)
