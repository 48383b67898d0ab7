"""Test helpers: which of some process ids are still alive (zombies count as gone), and waiting for them to go."""

from __future__ import annotations

import time

import psutil


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
