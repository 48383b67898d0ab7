"""`quant-tui monitor`, run in-process against a tiny local HTTP server that plays a vLLM /metrics endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.telemetry.fake_metrics import FakeMetricsEndpoint, fake_metrics_endpoint, fixture_text, free_port


@pytest.fixture
def endpoint() -> Iterator[tuple[FakeMetricsEndpoint, str]]:
    """A local server playing vLLM's /metrics endpoint; yields its state and its base URL."""
    with fake_metrics_endpoint() as served:
        yield served


def monitor(*argv: str) -> int:
    from tui.cli import main

    return main(["monitor", *argv])


def test_monitor_once_json(
    endpoint: tuple[FakeMetricsEndpoint, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, url = endpoint
    state.bodies = [fixture_text("v032_under_load"), fixture_text("v032_after")]
    assert monitor(url, "--json", "--once", "--interval", "0.1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["generation_tokens_total"] == 773.0
    assert record["prompt_tokens_total"] == 329.0
    assert record["generation_tokens_per_s"] > 0  # two scrapes, so the rate is real
    assert record["requests_running"] == 0.0 and record["requests_waiting"] == 0.0
    assert record["kv_cache_usage"] == 0.0 and record["error"] is None


def test_monitor_plain_count_and_export(
    endpoint: tuple[FakeMetricsEndpoint, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, url = endpoint
    export = tmp_path / "run.json"
    assert monitor(url, "--plain", "--count", "3", "--interval", "0.05", "--export", str(export)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all("tok/s" in line for line in lines)
    assert len(json.loads(export.read_text())) == 3


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("garbage", "not Prometheus text"),
        ("unreachable", "cannot reach"),
        ("forbidden", "--api-key"),
    ],
)
def test_monitor_fatal_first_poll(
    endpoint: tuple[FakeMetricsEndpoint, str], capsys: pytest.CaptureFixture[str], setup: str, message: str
) -> None:
    state, url = endpoint
    if setup == "garbage":
        state.bodies = ["<html>nope</html>"]
    elif setup == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"
    else:
        state.required_key = "right"
    assert monitor(url, "--json", "--once") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("quant-tui: error: ") and message in captured.err
    assert len(captured.err.strip().splitlines()) == 1  # one line, no traceback


def test_monitor_gives_up_on_a_server_that_stops_answering(
    endpoint: tuple[FakeMetricsEndpoint, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, url = endpoint
    state.bodies = [fixture_text("v032_idle"), fixture_text("v032_idle"), "garbage"]
    assert monitor(url, "--json", "--interval", "0.05") == 2
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert records[0]["error"] is None and records[-1]["error"] is not None
    assert "lost the server after 5 failed polls" in captured.err


@pytest.mark.parametrize(
    "argv",
    [("--count", "0"), ("--export", "run.txt"), ("--interval", "0")],
    ids=["count", "export", "interval"],
)
def test_monitor_bad_options(
    endpoint: tuple[FakeMetricsEndpoint, str], capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    _, url = endpoint
    assert monitor(url, *argv) == 2
    assert capsys.readouterr().err.startswith("quant-tui: error: ")
