"""The dashboard's figures derived from two consecutive scrapes: rates, usage, hit rate and latency quantiles."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

from engine.telemetry.histogram import Histogram
from engine.telemetry.metrics import MetricsSample

__all__ = ["DerivedMetrics", "derive"]


@dataclass(frozen=True)
class DerivedMetrics:
    """The figures the dashboard shows, from one scrape and the one before it (the window).

    Totals and gauges come from the current scrape; rates, hit rate and quantiles from the window
    between the two scrapes (for the very first scrape, from everything since the server started).
    ``None`` means the server does not publish the figure or the window holds no data for it.
    """

    window_s: float | None
    prompt_tokens_total: float | None
    generation_tokens_total: float | None
    prompt_tokens_per_s: float | None
    generation_tokens_per_s: float | None
    requests_running: float | None
    requests_waiting: float | None
    kv_cache_usage: float | None
    kv_cache_capacity_tokens: int | None
    prefix_cache_hit_rate: float | None
    preemptions_total: float | None
    preemptions_per_s: float | None
    finished_requests: Mapping[str, float]
    finished_requests_in_window: Mapping[str, float]
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    itl_p50_s: float | None
    itl_p95_s: float | None
    e2e_p50_s: float | None
    e2e_p95_s: float | None
    missing: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A tick's figures never change after it: read-only copies of the per-reason counts.
        for name in ("finished_requests", "finished_requests_in_window"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every figure."""
        data: dict[str, Any] = {item.name: getattr(self, item.name) for item in fields(self)}
        data["finished_requests"] = dict(self.finished_requests)
        data["finished_requests_in_window"] = dict(self.finished_requests_in_window)
        data["missing"] = list(self.missing)
        return data


def _increase(current: float, previous: float) -> float:
    """A counter's increase; after a reset (server restart) the current value is the increase."""
    return current - previous if current >= previous else current


def _per_second(
    current: MetricsSample, previous: MetricsSample | None, name: str, window_s: float | None
) -> float | None:
    """A counter's rate over the window; ``None`` without a window or the counter."""
    if previous is None or not window_s or window_s <= 0:
        return None
    now, before = current.counters.get(name), previous.counters.get(name)
    if now is None or before is None:
        return None
    return _increase(now, before) / window_s


def _window_increase(current: MetricsSample, previous: MetricsSample | None, name: str) -> float | None:
    """A counter's increase over the window, or its total for the first scrape."""
    now = current.counters.get(name)
    if now is None:
        return None
    before = previous.counters.get(name) if previous is not None else None
    return now if before is None else _increase(now, before)


def _window_histogram(current: MetricsSample, previous: MetricsSample | None, name: str) -> Histogram | None:
    """A histogram of the window (or of the whole run for the first scrape)."""
    histogram = current.histograms.get(name)
    if histogram is None:
        return None
    earlier = previous.histograms.get(name) if previous is not None else None
    return histogram if earlier is None else histogram.minus(earlier)


def _kv_capacity_tokens(cache_config: Mapping[str, str]) -> int | None:
    """KV cache capacity in tokens from ``vllm:cache_config_info``; ``None`` when not published.

    Recent vLLM publishes ``kv_cache_size_tokens`` itself; older versions only ``num_gpu_blocks`` and
    ``block_size``, whose product is the same figure.
    """
    try:
        published = int(cache_config["kv_cache_size_tokens"])
    except (KeyError, ValueError):
        published = 0
    if published > 0:
        return published
    try:
        blocks = int(cache_config["num_gpu_blocks"])
        block_size = int(cache_config["block_size"])
    except (KeyError, ValueError):
        return None
    return blocks * block_size if blocks > 0 and block_size > 0 else None


def _quantiles(histogram: Histogram | None) -> tuple[float | None, float | None]:
    """p50 and p95 of a histogram, or ``(None, None)``."""
    if histogram is None:
        return None, None
    return histogram.quantile(0.5), histogram.quantile(0.95)


def _finished_in_window(current: MetricsSample, previous: MetricsSample | None) -> dict[str, float]:
    """Finished requests per reason since the previous scrape."""
    before: Mapping[str, float] = previous.finished_by_reason if previous is not None else {}
    return {
        reason: _increase(value, before[reason]) if reason in before else value
        for reason, value in current.finished_by_reason.items()
    }


def _prefix_hit_rate(current: MetricsSample, previous: MetricsSample | None) -> float | None:
    """Hits / queries over the window from the counters, else the old V0 hit-rate gauge."""
    queries = _window_increase(current, previous, "prefix_cache_queries")
    hits = _window_increase(current, previous, "prefix_cache_hits")
    if queries is not None and hits is not None:
        return hits / queries if queries > 0 else None
    return current.gauges.get("prefix_cache_hit_rate")


def _missing(current: MetricsSample, names: Iterable[str]) -> tuple[str, ...]:
    """The canonical names this server does not publish."""
    return tuple(name for name in names if name not in current.matched_names)


# Figures every vLLM version publishes under one of its names; absent ones are listed in ``missing``.
_EXPECTED = (
    "prompt_tokens",
    "generation_tokens",
    "requests_running",
    "requests_waiting",
    "kv_cache_usage",
    "preemptions",
    "request_success",
    "time_to_first_token",
    "inter_token_latency",
    "e2e_request_latency",
    "cache_config",
)


def derive(previous: MetricsSample | None, current: MetricsSample) -> DerivedMetrics:
    """Derives rates, usage and latency quantiles from two consecutive scrapes.

    Args:
        previous: The scrape before, or ``None`` for the first one (rates are then ``None`` and
            quantiles cover the server's whole life).
        current: The latest scrape.

    Returns:
        The dashboard's figures for the window between the scrapes.
    """
    window_s = current.taken_at - previous.taken_at if previous is not None else None
    ttft = _quantiles(_window_histogram(current, previous, "time_to_first_token"))
    itl = _quantiles(_window_histogram(current, previous, "inter_token_latency"))
    e2e = _quantiles(_window_histogram(current, previous, "e2e_request_latency"))
    return DerivedMetrics(
        window_s=window_s,
        prompt_tokens_total=current.counters.get("prompt_tokens"),
        generation_tokens_total=current.counters.get("generation_tokens"),
        prompt_tokens_per_s=_per_second(current, previous, "prompt_tokens", window_s),
        generation_tokens_per_s=_per_second(current, previous, "generation_tokens", window_s),
        requests_running=current.gauges.get("requests_running"),
        requests_waiting=current.gauges.get("requests_waiting"),
        kv_cache_usage=current.gauges.get("kv_cache_usage"),
        kv_cache_capacity_tokens=_kv_capacity_tokens(current.cache_config),
        prefix_cache_hit_rate=_prefix_hit_rate(current, previous),
        preemptions_total=current.counters.get("preemptions"),
        preemptions_per_s=_per_second(current, previous, "preemptions", window_s),
        finished_requests=current.finished_by_reason,
        finished_requests_in_window=_finished_in_window(current, previous),
        ttft_p50_s=ttft[0],
        ttft_p95_s=ttft[1],
        itl_p50_s=itl[0],
        itl_p95_s=itl[1],
        e2e_p50_s=e2e[0],
        e2e_p95_s=e2e[1],
        missing=_missing(current, _EXPECTED),
    )
