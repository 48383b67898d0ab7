"""Tests for engine.telemetry.poller against a tiny local HTTP server that plays a vLLM /metrics endpoint."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from engine.telemetry.errors import TelemetryError
from engine.telemetry.poller import TelemetryPoller
from engine.telemetry.processes import ProcessTreeSampler
from engine.telemetry.snapshot import TelemetrySnapshot
from tests.telemetry.fake_metrics import FakeMetricsEndpoint, fake_metrics_endpoint, fixture_text, free_port


@pytest.fixture
def endpoint() -> Iterator[tuple[FakeMetricsEndpoint, str]]:
    """A local server playing vLLM's /metrics endpoint; yields its state and its base URL."""
    with fake_metrics_endpoint() as served:
        yield served


@pytest.mark.parametrize(("interval", "history"), [(0.0, 10), (-1.0, 10), (float("nan"), 10), (1.0, 0)])
def test_bad_interval_or_history(interval: float, history: int) -> None:
    with pytest.raises(TelemetryError):
        TelemetryPoller("http://127.0.0.1:1", interval_s=interval, history=history)


def test_poll_once_reads_and_derives(endpoint: tuple[FakeMetricsEndpoint, str]) -> None:
    state, url = endpoint
    state.bodies = [fixture_text("v032_idle"), fixture_text("v032_after")]
    with TelemetryPoller(url, interval_s=1.0, sample_hardware=True) as poller:
        first = poller.poll_once()
        second = poller.poll_once()
    assert first.ok and second.ok
    assert state.paths == ["/metrics", "/metrics"]
    assert first.metrics is not None and second.metrics is not None
    assert first.metrics.generation_tokens_per_s is None  # no window yet
    assert second.metrics.generation_tokens_total == 773.0
    assert second.metrics.generation_tokens_per_s is not None
    assert second.metrics.generation_tokens_per_s == pytest.approx(773.0 / second.metrics.window_s)
    assert second.host is not None and second.host.memory_total_bytes > 0
    assert second.server_alive is None and second.server_rss_bytes is None


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ("<html>hello</html>", 200, "not Prometheus text"),
        ("# HELP up up\n# TYPE up gauge\nup 1\n", 200, "no vLLM metrics"),
        ("Not Found", 404, "answered HTTP 404"),
        ("oops", 500, "answered HTTP 500: the server is up but failing (its engine may have died)"),
    ],
)
def test_bad_answers_become_snapshot_errors(
    endpoint: tuple[FakeMetricsEndpoint, str], body: str, status: int, message: str
) -> None:
    state, url = endpoint
    state.bodies, state.status = [body], status
    with TelemetryPoller(url, sample_hardware=False) as poller:
        snapshot = poller.poll_once()
    assert not snapshot.ok
    assert snapshot.metrics is None
    assert snapshot.error is not None and message in snapshot.error and "\n" not in snapshot.error


def test_recovers_after_a_bad_poll(endpoint: tuple[FakeMetricsEndpoint, str]) -> None:
    state, url = endpoint
    state.bodies = ["garbage here", fixture_text("v032_after")]
    with TelemetryPoller(url, sample_hardware=False) as poller:
        assert poller.poll_once().error is not None
        assert poller.poll_once().ok


def test_api_key_is_sent_as_bearer(endpoint: tuple[FakeMetricsEndpoint, str]) -> None:
    state, url = endpoint
    state.required_key = "sekrit"
    with TelemetryPoller(url, api_key="wrong", sample_hardware=False) as poller:
        refused = poller.poll_once()
    with TelemetryPoller(url, api_key="sekrit", sample_hardware=False) as poller:
        accepted = poller.poll_once()
    assert refused.error is not None and "--api-key" in refused.error
    assert accepted.ok


def test_unreachable_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with TelemetryPoller(url, sample_hardware=False) as poller:
        snapshot = poller.poll_once()
    assert snapshot.error is not None and "cannot reach" in snapshot.error


def test_timeout(endpoint: tuple[FakeMetricsEndpoint, str]) -> None:
    state, url = endpoint
    state.delay_s = 1.0
    with TelemetryPoller(url, timeout_s=0.2, sample_hardware=False) as poller:
        snapshot = poller.poll_once()
    assert snapshot.error is not None and "no answer" in snapshot.error


def test_run_never_overlaps_and_stops(endpoint: tuple[FakeMetricsEndpoint, str]) -> None:
    state, url = endpoint
    state.delay_s = 0.15  # each poll takes longer than the interval
    stop = threading.Event()
    seen: list[TelemetrySnapshot] = []

    def on_snapshot(snapshot: TelemetrySnapshot) -> None:
        seen.append(snapshot)
        if len(seen) == 4:
            stop.set()

    with TelemetryPoller(url, interval_s=0.05, sample_hardware=False) as poller:
        worker = threading.Thread(target=poller.run, args=(on_snapshot, stop))
        worker.start()
        worker.join(timeout=10)
    assert not worker.is_alive()
    assert len(seen) == 4 and all(snapshot.ok for snapshot in seen)
    assert state.most_in_flight == 1
    starts = [snapshot.taken_at for snapshot in seen]
    assert all(later - earlier >= 0.15 for earlier, later in itertools.pairwise(starts))


def test_interval_change_applies_while_running(endpoint: tuple[FakeMetricsEndpoint, str]) -> None:
    _, url = endpoint
    stop = threading.Event()
    seen: list[TelemetrySnapshot] = []
    with TelemetryPoller(url, interval_s=30.0, sample_hardware=False) as poller:
        worker = threading.Thread(target=poller.run, args=(seen.append, stop))
        worker.start()
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        poller.interval_s = 0.05  # without this the second poll would come 30 s later
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        worker.join(timeout=5)
    assert len(seen) >= 3
    assert not worker.is_alive()


def test_history_is_bounded_and_exported(endpoint: tuple[FakeMetricsEndpoint, str], tmp_path: Path) -> None:
    state, url = endpoint
    state.bodies = [
        fixture_text("v032_idle"),
        fixture_text("v032_under_load"),
        "garbage",
        fixture_text("v032_after"),
    ]
    with TelemetryPoller(url, history=3, sample_hardware=True) as poller:
        for _ in range(4):
            poller.poll_once()
        series = poller.series()
        csv_path = poller.export_csv(tmp_path / "run" / "telemetry.csv")
        json_path = poller.export_json(tmp_path / "run" / "telemetry.json")
    assert len(poller.snapshots()) == 3
    assert all(len(values) == 3 for values in series.values())
    assert series["requests_running"] == [4.0, None, 0.0]
    assert series["host_memory_used_bytes"][0] is not None
    rows = list(csv.DictReader(csv_path.open()))
    assert [row["requests_running"] for row in rows] == ["4.0", "", "0.0"]
    assert "not Prometheus text" in rows[1]["error"]
    assert rows[2]["generation_tokens_total"] == "773.0"
    exported = json.loads(json_path.read_text())
    assert len(exported) == 3
    assert exported[2]["metrics"]["generation_tokens_total"] == 773.0
    assert isinstance(exported[2]["host"]["cpu_flags"], list)
    assert sorted(path.name for path in csv_path.parent.iterdir()) == ["telemetry.csv", "telemetry.json"]


def _parent_of(child_code: str) -> subprocess.Popen[bytes]:
    """Starts a sleeping parent process that starts one child running ``child_code``."""
    parent_code = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {child_code!r}]); time.sleep(60)"
    )
    return subprocess.Popen([sys.executable, "-c", parent_code])


def _children_of(pid: int, named: str | None = None) -> list[psutil.Process]:
    """``pid``'s children once it has one (whose first is ``named``, if given), waiting up to 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = psutil.Process(pid).children()
        if children and (named is None or children[0].name() == named):
            break
        time.sleep(0.05)
    return children


def test_process_tree_memory_and_exit(endpoint: tuple[FakeMetricsEndpoint, str]) -> None:
    _, url = endpoint
    parent = _parent_of("import time; time.sleep(60)")
    try:
        _children_of(parent.pid)
        tree = ProcessTreeSampler(parent.pid).sample().rss_bytes
        assert tree is not None and tree > psutil.Process(parent.pid).memory_info().rss
        with TelemetryPoller(url, server_pid=parent.pid, sample_hardware=False) as poller:
            alive = poller.poll_once()
            for child in psutil.Process(parent.pid).children(recursive=True):
                child.kill()
            parent.kill()
            parent.wait()
            gone = poller.poll_once()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert alive.ok and alive.server_alive is True and alive.server_rss_bytes
    assert gone.server_alive is False and gone.server_rss_bytes is None
    assert gone.error is not None and f"pid {parent.pid}" in gone.error and "exited" in gone.error
    assert gone.engine_died and gone.error.startswith("the vLLM engine process died")


def test_an_engine_core_that_dies_under_a_live_server_is_reported(
    endpoint: tuple[FakeMetricsEndpoint, str],
) -> None:
    _, url = endpoint
    # vLLM titles its engine process "VLLM::EngineCore" (setproctitle); the API server lives on a while.
    parent = _parent_of(
        "import setproctitle, time; setproctitle.setproctitle('VLLM::EngineCore'); time.sleep(60)"
    )
    try:
        children = _children_of(parent.pid, named="VLLM::EngineCore")
        with TelemetryPoller(url, server_pid=parent.pid, sample_hardware=False) as poller:
            alive = poller.poll_once()
            time.sleep(0.2)
            second = poller.poll_once()
            children[0].kill()
            # The sleeping parent does not reap it: the engine stays a zombie, as under a stuck server.
            while children[0].is_running() and children[0].status() != psutil.STATUS_ZOMBIE:
                time.sleep(0.05)
            died = poller.poll_once()
    finally:
        parent.kill()
        parent.wait()
    assert [process.name for process in alive.server_processes][1:] == ["VLLM::EngineCore"]
    assert alive.server_processes[0].pid == parent.pid and not alive.engine_died
    assert second.server_processes[1].rss_bytes > 0 and second.server_processes[1].cpu_percent >= 0.0
    assert died.server_alive is True and died.engine_died
    assert died.error == (
        f"the vLLM engine process died (the server process, pid {parent.pid}, still runs without it)"
    )
    assert [process.pid for process in died.server_processes] == [parent.pid]
