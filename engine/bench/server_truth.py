"""The server's own view of a benchmark window: ``/metrics`` sampled during the run, as deltas and peaks."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from engine.serve import client as server_client
from engine.telemetry.histogram import Histogram
from engine.telemetry.metrics import MetricsError, MetricsSample, parse_metrics

__all__ = ["HistogramWindow", "ServerSampler", "ServerWindow", "window_between"]

# Each scrape makes the server render /metrics on the event loop that streams tokens: not too often.
DEFAULT_INTERVAL_S = 2.0
# vLLM 0.32 publishes the queue time (arrival to first schedule) as a histogram quant-tui's telemetry does not read.
_QUEUE_TIME = re.compile(
    r"^vllm:request_queue_time_seconds_(sum|count)(?:\{[^}]*\})?\s+([0-9.eE+-]+|NaN)", re.M
)


@dataclass(frozen=True, slots=True)
class HistogramWindow:
    """One server histogram over the window, in milliseconds (bucket-interpolated, as Prometheus does).

    Attributes:
        count: Observations in the window.
        mean_ms: Exact mean (``_sum / _count`` deltas).
        median_ms: Bucket-interpolated median.
        p95_ms: Bucket-interpolated 95th percentile.
        p99_ms: Bucket-interpolated 99th percentile.
    """

    count: float
    mean_ms: float | None
    median_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @classmethod
    def of(cls, histogram: Histogram) -> HistogramWindow:
        """The figures of a (delta) histogram given in seconds."""

        def ms(value: float | None) -> float | None:
            return None if value is None else value * 1000.0

        mean = histogram.total / histogram.count * 1000.0 if histogram.count > 0 else None
        return cls(
            histogram.count,
            mean,
            ms(histogram.quantile(0.5)),
            ms(histogram.quantile(0.95)),
            ms(histogram.quantile(0.99)),
        )


@dataclass(frozen=True)
class ServerWindow:
    """What the server counted between the first and last scrape of a run.

    Attributes:
        samples: Scrapes that were read.
        window_s: Seconds between the first and last scrape.
        request_success: Increase of ``vllm:request_success`` (all finish reasons).
        finished_by_reason: The same, split by ``finished_reason``.
        prompt_tokens: Increase of ``vllm:prompt_tokens``.
        generation_tokens: Increase of ``vllm:generation_tokens``.
        preemptions: Increase of ``vllm:num_preemptions``.
        prefix_cache_queries: Increase of the prefix-cache queries (tokens).
        prefix_cache_hits: Increase of the prefix-cache hits (tokens).
        kv_cache_usage_peak: Highest KV cache usage seen (0..1).
        requests_running_peak: Most requests the server ran at once in a scrape.
        requests_waiting_peak: Most requests waiting in the server's queue in a scrape.
        ttft: Server-side time to first token.
        itl: Server-side inter-token latency.
        e2el: Server-side end-to-end latency.
        queue_time_mean_ms: Mean time requests waited in the server's queue (``_sum/_count`` deltas).
        error: Why a scrape failed, if one did.
    """

    samples: int
    window_s: float | None = None
    request_success: float | None = None
    finished_by_reason: Mapping[str, float] = field(default_factory=dict)
    prompt_tokens: float | None = None
    generation_tokens: float | None = None
    preemptions: float | None = None
    prefix_cache_queries: float | None = None
    prefix_cache_hits: float | None = None
    kv_cache_usage_peak: float | None = None
    requests_running_peak: float | None = None
    requests_waiting_peak: float | None = None
    ttft: HistogramWindow | None = None
    itl: HistogramWindow | None = None
    e2el: HistogramWindow | None = None
    queue_time_mean_ms: float | None = None
    error: str | None = None


def _queue_time(text: str) -> tuple[float, float] | None:
    """``(sum, count)`` of the queue-time histogram summed over label sets; ``None`` when absent."""
    totals = {"sum": 0.0, "count": 0.0}
    found = False
    for kind, value in _QUEUE_TIME.findall(text):
        if value != "NaN":
            totals[kind] += float(value)
            found = True
    return (totals["sum"], totals["count"]) if found else None


def _delta(first: Mapping[str, float], last: Mapping[str, float], name: str) -> float | None:
    if name not in first or name not in last:
        return None
    return last[name] - first[name]


def window_between(
    first: MetricsSample,
    last: MetricsSample,
    peaks: Mapping[str, float],
    samples: int,
    queue: tuple[tuple[float, float] | None, tuple[float, float] | None] = (None, None),
    error: str | None = None,
) -> ServerWindow:
    """The server's figures between two scrapes; ``peaks`` holds the highest gauges seen in between.

    Args:
        first: The scrape just before the run.
        last: The scrape just after it.
        peaks: Gauge name -> the highest value seen (``kv_cache_usage``, ``requests_running``...).
        samples: How many scrapes were read.
        queue: ``(sum, count)`` of the queue-time histogram at the first and last scrape.
        error: Why a scrape failed, if one did.
    """

    def histogram(name: str) -> HistogramWindow | None:
        if name not in first.histograms or name not in last.histograms:
            return None
        return HistogramWindow.of(last.histograms[name].minus(first.histograms[name]))

    reasons = {
        reason: value - first.finished_by_reason.get(reason, 0.0)
        for reason, value in last.finished_by_reason.items()
        if value - first.finished_by_reason.get(reason, 0.0) > 0
    }
    queue_mean = None
    if queue[0] is not None and queue[1] is not None and queue[1][1] > queue[0][1]:
        queue_mean = (queue[1][0] - queue[0][0]) / (queue[1][1] - queue[0][1]) * 1000.0
    return ServerWindow(
        samples=samples,
        window_s=last.taken_at - first.taken_at,
        request_success=_delta(first.counters, last.counters, "request_success"),
        finished_by_reason=reasons,
        prompt_tokens=_delta(first.counters, last.counters, "prompt_tokens"),
        generation_tokens=_delta(first.counters, last.counters, "generation_tokens"),
        preemptions=_delta(first.counters, last.counters, "preemptions"),
        prefix_cache_queries=_delta(first.counters, last.counters, "prefix_cache_queries"),
        prefix_cache_hits=_delta(first.counters, last.counters, "prefix_cache_hits"),
        kv_cache_usage_peak=peaks.get("kv_cache_usage"),
        requests_running_peak=peaks.get("requests_running"),
        requests_waiting_peak=peaks.get("requests_waiting"),
        ttft=histogram("time_to_first_token"),
        itl=histogram("inter_token_latency"),
        e2el=histogram("e2e_request_latency"),
        queue_time_mean_ms=queue_mean,
        error=error,
    )


class ServerSampler:
    """Scrapes ``/metrics`` before, during (every ``interval_s``, in a thread) and after a run.

    Use as a context manager around the run; :attr:`window` is set on exit. Scrapes are slow enough
    (2 s by default; 0 scrapes only before and after) that the parsing, which holds the GIL for a few ms, does not disturb the load.
    """

    def __init__(self, url: str, api_key: str | None = None, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        """Prepares the sampler; the first scrape happens on ``__enter__``.

        Raises:
            ServerClientError: The URL is not an http(s) URL.
        """
        self.url = server_client.metrics_url(url)
        self.interval_s = interval_s
        self._client = httpx.Client(headers=server_client.auth_headers(api_key), timeout=10.0)
        self._api_key = api_key
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first: MetricsSample | None = None
        self._last: MetricsSample | None = None
        self._queue: list[tuple[float, float] | None] = [None, None]
        self._peaks: dict[str, float] = {}
        self._samples = 0
        self._error: str | None = None
        self.window: ServerWindow | None = None

    def _scrape(self) -> tuple[MetricsSample, str] | None:
        try:
            response = self._client.get(self.url)
            response.raise_for_status()
            return parse_metrics(response.text), response.text
        except MetricsError as error:
            self._error = server_client.redact(f"{self.url}: {error}", [self._api_key])
        except httpx.HTTPError as error:
            self._error = server_client.describe_http_failure(error, self.url, 10.0)
        return None

    def _take(self) -> tuple[MetricsSample, str] | None:
        scraped = self._scrape()
        if scraped is None:
            return None
        sample, _ = scraped
        self._samples += 1
        for name in ("kv_cache_usage", "requests_running", "requests_waiting"):
            if name in sample.gauges:
                self._peaks[name] = max(self._peaks.get(name, sample.gauges[name]), sample.gauges[name])
        return scraped

    def _loop(self) -> None:
        if self.interval_s <= 0:
            return
        while not self._stop.wait(self.interval_s):
            self._take()

    def __enter__(self) -> ServerSampler:
        scraped = self._take()
        if scraped is not None:
            self._first, self._queue[0] = scraped[0], _queue_time(scraped[1])
        self._thread = threading.Thread(target=self._loop, name="bench-server-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        # vLLM updates its counters when a request's last output is processed: give it a beat.
        time.sleep(0.2)
        scraped = self._take()
        if scraped is not None:
            self._last, self._queue[1] = scraped[0], _queue_time(scraped[1])
        self._client.close()
        if self._first is None or self._last is None:
            self.window = ServerWindow(samples=self._samples, error=self._error or "no scrape was read")
        else:
            self.window = window_between(
                self._first,
                self._last,
                self._peaks,
                self._samples,
                (self._queue[0], self._queue[1]),
                self._error,
            )


def window_dict(window: ServerWindow | None) -> dict[str, Any] | None:
    """A JSON-ready copy of a server window."""
    from dataclasses import asdict

    return None if window is None else asdict(window)
