"""Tests for engine.bench.server_truth: the server's own figures over a load, from real vLLM 0.32 /metrics scrapes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.bench.server_truth import ServerSampler, window_between
from engine.telemetry.metrics import parse_metrics
from tests.bench.local_server import QuietHandler, local_server

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
IDLE = (FIXTURES / "metrics_v032_idle.txt").read_text()
AFTER = (FIXTURES / "metrics_v032_after.txt").read_text()


def test_window_between_real_scrapes() -> None:
    # Figures read off the two fixture files by hand (idle: all zero; after: 13 requests).
    window = window_between(
        parse_metrics(IDLE, 10.0), parse_metrics(AFTER, 12.5), {"kv_cache_usage": 0.25}, 2
    )
    assert window.window_s == pytest.approx(2.5)
    assert window.request_success == 13 and dict(window.finished_by_reason) == {"length": 13}
    assert window.prompt_tokens == 329 and window.generation_tokens == 773
    assert window.preemptions == 0 and window.prefix_cache_queries == 329 and window.prefix_cache_hits == 0
    assert window.kv_cache_usage_peak == 0.25
    assert window.ttft is not None and window.ttft.count == 13
    assert window.ttft.mean_ms == pytest.approx(527.1039009094238 / 13)
    assert window.queue_time_mean_ms is None  # no (sum, count) pair was given


@pytest.fixture
def metrics_server() -> Iterator[str]:
    """Serves the idle scrape first, then the one after the load."""
    answers = [IDLE]

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self.send_body(
                (answers.pop(0) if len(answers) > 0 else AFTER).encode(), content_type="text/plain"
            )

    with local_server(Handler) as url:
        yield url + "/v1"


def test_sampler_reads_the_window_and_the_queue_time(metrics_server: str) -> None:
    with ServerSampler(metrics_server, interval_s=30.0) as sampler:
        pass
    window = sampler.window
    assert window is not None and window.samples == 2 and window.error is None
    assert window.request_success == 13 and window.generation_tokens == 773
    assert window.queue_time_mean_ms == pytest.approx(0.0004509429998051928 / 13 * 1000)


def test_sampler_on_a_dead_server_says_why() -> None:
    with ServerSampler("http://127.0.0.1:1", interval_s=30.0) as sampler:
        pass
    assert sampler.window is not None and sampler.window.request_success is None
    assert sampler.window.error is not None and "cannot reach" in sampler.window.error
