"""The poller's memory stays flat once its history is full: real polls of a real local HTTP server."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine.telemetry.poller import TelemetryPoller
from engine.telemetry.processes import ProcessTreeSampler

BODY = (Path(__file__).parents[1] / "fixtures" / "metrics_v032_under_load.txt").read_bytes()
HISTORY = 20
POLLS = 200
# 256 KiB per 1000 polls (about 260 bytes a poll; httpx's URL parsing leaves about 100 here): one
# snapshot kept per poll (about 2.5 KB) exceeds it tenfold, and the dashboard soak's 0.4 MiB/min at
# one poll a second (about 7 KB a poll) almost thirtyfold.
MAX_GROWTH_BYTES = 256 * 1024 * POLLS // 1000
# The fake server runs in this process: its allocations are not the poller's.
SERVER_SIDE = ("http/server.py", "socketserver.py", "email/", tracemalloc.__file__)


class _Metrics(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as vLLM's uvicorn answers

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _traced_bytes() -> int:
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, f"*{name}*") for name in SERVER_SIDE]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


def test_retained_memory_is_bounded_once_the_history_is_full(metrics_server: str) -> None:
    # This process as the "server": its tree is sampled every tick, as for a server quant-tui started.
    with TelemetryPoller(
        metrics_server, interval_s=0.05, history=HISTORY, server_pid=os.getpid(), sample_hardware=True
    ) as poller:
        for _ in range(HISTORY):  # connection pooled, lazy imports done
            assert poller.poll_once().ok
        tracemalloc.start(1)
        try:
            for _ in range(HISTORY):  # the history full of traced snapshots: what it holds is counted
                poller.poll_once()
            before = _traced_bytes()
            for _ in range(POLLS):
                poller.poll_once()
            after = _traced_bytes()
        finally:
            tracemalloc.stop()
        assert len(poller.snapshots()) == HISTORY
        assert all(len(values) == HISTORY for values in poller.series().values())
    assert after - before < MAX_GROWTH_BYTES, f"grew {after - before} bytes over {POLLS} polls"


def test_processes_that_come_and_go_are_remembered_once() -> None:
    parent_code = (
        "import subprocess, sys, time\n"
        "for _ in range(12):\n"
        "    subprocess.run([sys.executable, '-c', 'import time; time.sleep(0.3)'])\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    try:
        sampler = ProcessTreeSampler(parent.pid)
        deadline = time.monotonic() + 60
        seen_children: set[int] = set()
        while len(seen_children) < 3 and time.monotonic() < deadline:
            tree = sampler.sample()
            seen_children |= {process.pid for process in tree.processes[1:]}
            time.sleep(0.05)
        tree = sampler.sample()
    finally:
        parent.kill()
        parent.wait()
    assert len(seen_children) >= 3  # several helpers came and went while watched
    assert tree.root_alive and not tree.engine_died
    assert len(tree.lost) == 1  # each a python helper: one name, remembered once
