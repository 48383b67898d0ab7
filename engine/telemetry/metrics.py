"""Parsing vLLM's Prometheus ``/metrics`` text and deriving rates, usage and latency quantiles from it."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from engine.errors import QuantTuiError

__all__ = [
    "METRIC_NAMES",
    "DerivedMetrics",
    "Histogram",
    "MetricSpec",
    "MetricsError",
    "MetricsSample",
    "derive",
    "parse_metrics",
]


class MetricsError(QuantTuiError):
    """The ``/metrics`` answer is not Prometheus text from a vLLM server."""


MetricKind = Literal["counter", "gauge", "histogram", "info"]
Aggregation = Literal["sum", "mean"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One figure quant-tui reads, and every name vLLM has published it under (newest first).

    Attributes:
        kind: How the samples are read: a counter (``_total`` suffix optional), a gauge, a histogram
            (``_bucket``/``_sum``/``_count``) or an info gauge whose labels carry the data.
        names: Accepted metric names, newest first; the first one present in a scrape wins, so a
            server that still publishes a deprecated alias next to the new name is not double counted.
        aggregation: How label sets (engines, models) are combined: summed, or averaged for ratios.
    """

    kind: MetricKind
    names: tuple[str, ...]
    aggregation: Aggregation = "sum"


# Canonical name -> the vLLM names it has had. Sources: vllm/v1/metrics/loggers.py of vLLM 0.32 for the
# current names; vLLM V0's vllm/engine/metrics.py and the deprecations of vLLM 0.8-0.10 for the older ones
# (gpu_cache_usage_perc -> kv_cache_usage_perc, gpu_prefix_cache_* -> prefix_cache_*,
# time_per_output_token_seconds -> inter_token_latency_seconds).
METRIC_NAMES: Mapping[str, MetricSpec] = {
    "prompt_tokens": MetricSpec("counter", ("vllm:prompt_tokens",)),
    "generation_tokens": MetricSpec("counter", ("vllm:generation_tokens",)),
    "requests_running": MetricSpec("gauge", ("vllm:num_requests_running",)),
    "requests_waiting": MetricSpec("gauge", ("vllm:num_requests_waiting",)),
    "requests_swapped": MetricSpec("gauge", ("vllm:num_requests_swapped",)),
    "kv_cache_usage": MetricSpec(
        "gauge", ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"), aggregation="mean"
    ),
    "cpu_swap_cache_usage": MetricSpec("gauge", ("vllm:cpu_cache_usage_perc",), aggregation="mean"),
    "prefix_cache_queries": MetricSpec(
        "counter", ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries")
    ),
    "prefix_cache_hits": MetricSpec("counter", ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits")),
    "prefix_cache_hit_rate": MetricSpec("gauge", ("vllm:gpu_prefix_cache_hit_rate",), aggregation="mean"),
    "preemptions": MetricSpec("counter", ("vllm:num_preemptions",)),
    "request_success": MetricSpec("counter", ("vllm:request_success",)),
    "time_to_first_token": MetricSpec("histogram", ("vllm:time_to_first_token_seconds",)),
    "inter_token_latency": MetricSpec(
        "histogram", ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
    ),
    "e2e_request_latency": MetricSpec("histogram", ("vllm:e2e_request_latency_seconds",)),
    "cache_config": MetricSpec("info", ("vllm:cache_config_info",)),
}

# Label that splits vllm:request_success by why a request finished (stop, length, abort, error...).
_FINISHED_REASON_LABEL = "finished_reason"
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_ERROR_EXCERPT_CHARS = 80


@dataclass(frozen=True, slots=True)
class Histogram:
    """A Prometheus histogram summed over its label sets.

    Attributes:
        buckets: ``(upper bound, cumulative count)`` pairs sorted by bound; the last bound is ``inf``
            when the server sent a ``+Inf`` bucket.
        total: The ``_sum`` of observed values.
        count: The ``_count`` of observations.
    """

    buckets: tuple[tuple[float, float], ...]
    total: float
    count: float

    def minus(self, earlier: Histogram) -> Histogram:
        """The observations made since ``earlier``; the whole histogram when the server restarted.

        Args:
            earlier: The same histogram from an earlier scrape.

        Returns:
            A histogram of the window between the two scrapes.
        """
        earlier_counts = dict(earlier.buckets)
        if [bound for bound, _ in self.buckets] != [bound for bound, _ in earlier.buckets]:
            return self
        deltas = tuple((bound, cumulative - earlier_counts[bound]) for bound, cumulative in self.buckets)
        if self.count < earlier.count or any(delta < 0 for _, delta in deltas):
            return self  # a counter reset: the server restarted between the scrapes
        return Histogram(deltas, self.total - earlier.total, self.count - earlier.count)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile, interpolated linearly inside its bucket as Prometheus' histogram_quantile.

        Args:
            q: The quantile, from 0 to 1.

        Returns:
            The estimated value, or ``None`` when there are no observations or no ``+Inf`` bucket.
        """
        if not self.buckets or not math.isinf(self.buckets[-1][0]):
            return None
        observations = self.buckets[-1][1]
        if observations <= 0:
            return None
        rank = q * observations
        index = next(i for i, (_, cumulative) in enumerate(self.buckets) if cumulative >= rank)
        upper, cumulative = self.buckets[index]
        if math.isinf(upper):
            # Prometheus answers with the highest finite bound when the rank lands in the +Inf bucket.
            return self.buckets[-2][0] if len(self.buckets) > 1 else None
        if index == 0 and upper <= 0:
            return upper
        lower, below = (0.0, 0.0) if index == 0 else self.buckets[index - 1]
        in_bucket = cumulative - below
        if in_bucket <= 0:
            return upper
        return lower + (upper - lower) * (rank - below) / in_bucket


@dataclass(frozen=True)
class MetricsSample:
    """One scrape of ``/metrics``, read into quant-tui's canonical names.

    Attributes:
        taken_at: ``time.monotonic()`` when the scrape was read.
        counters: Canonical counter name -> value summed over engines.
        gauges: Canonical gauge name -> value (summed, or averaged for ratios).
        histograms: Canonical histogram name -> buckets summed over engines.
        finished_by_reason: ``vllm:request_success`` split by ``finished_reason``.
        cache_config: The labels of ``vllm:cache_config_info`` (block size, number of blocks...).
        matched_names: Canonical name -> the vLLM metric name this server published it under.
    """

    taken_at: float
    counters: Mapping[str, float] = field(default_factory=dict)
    gauges: Mapping[str, float] = field(default_factory=dict)
    histograms: Mapping[str, Histogram] = field(default_factory=dict)
    finished_by_reason: Mapping[str, float] = field(default_factory=dict)
    cache_config: Mapping[str, str] = field(default_factory=dict)
    matched_names: Mapping[str, str] = field(default_factory=dict)


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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every figure."""
        data = asdict(self)
        data["finished_requests"] = dict(self.finished_requests)
        data["finished_requests_in_window"] = dict(self.finished_requests_in_window)
        data["missing"] = list(self.missing)
        return data


@dataclass
class _Collected:
    """Samples of one scrape grouped by metric name, before canonical names are applied."""

    scalars: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)


def _normalize(name: str) -> str:
    """``vllm_foo`` (exporters that cannot keep the colon) -> ``vllm:foo``."""
    if name.startswith("vllm_"):
        return "vllm:" + name[len("vllm_") :]
    return name


def _collect(text: str) -> _Collected:
    """Groups every sample by name; works per sample so missing or odd ``# TYPE`` lines do not matter."""
    from prometheus_client.parser import text_string_to_metric_families

    collected = _Collected()
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as error:
        excerpt = " ".join(str(error).split())[:_ERROR_EXCERPT_CHARS]
        raise MetricsError(
            f"the /metrics answer is not Prometheus text ({excerpt}); point at a vLLM server's base URL"
        ) from error
    for family in families:
        for sample in family.samples:
            name = _normalize(sample.name)
            value = float(sample.value)
            labels = dict(sample.labels)
            if name.endswith("_bucket") and "le" in labels:
                base = name[: -len("_bucket")]
                bound = float(labels.pop("le"))
                per_bound = collected.buckets.setdefault(base, {})
                per_bound[bound] = per_bound.get(bound, 0.0) + value
            elif name.endswith("_created"):
                continue  # creation timestamps of counters and histograms, not data
            else:
                collected.scalars.setdefault(name, []).append((labels, value))
                for suffix, target in (("_sum", collected.sums), ("_count", collected.counts)):
                    if name.endswith(suffix):
                        base = name[: -len(suffix)]
                        target[base] = target.get(base, 0.0) + value
    return collected


def _scalar_series(collected: _Collected, name: str, kind: MetricKind) -> list[tuple[dict[str, str], float]]:
    """The samples of a counter (with or without its ``_total`` suffix) or a gauge."""
    if kind == "counter":
        return collected.scalars.get(name + "_total") or collected.scalars.get(name, [])
    return collected.scalars.get(name, [])


def _aggregate(values: list[float], aggregation: Aggregation) -> float:
    """Combines the values of several label sets."""
    return sum(values) / len(values) if aggregation == "mean" else sum(values)


def parse_metrics(text: str, taken_at: float | None = None) -> MetricsSample:
    """Reads a vLLM ``/metrics`` answer into canonical names, whatever vLLM version wrote it.

    Args:
        text: The Prometheus text exposition.
        taken_at: ``time.monotonic()`` of the scrape; now when omitted.

    Returns:
        The scrape, with counters, gauges and histograms under canonical names.

    Raises:
        MetricsError: The text is not Prometheus exposition, or holds no vLLM metric at all.
    """
    stamp = time.monotonic() if taken_at is None else taken_at
    collected = _collect(text)
    if not any(name.startswith("vllm:") for name in (*collected.scalars, *collected.buckets)):
        raise MetricsError(
            "the /metrics answer holds no vLLM metrics; is the URL a vLLM server (and the right port)?"
        )
    counters: dict[str, float] = {}
    gauges: dict[str, float] = {}
    histograms: dict[str, Histogram] = {}
    finished: dict[str, float] = {}
    cache_config: dict[str, str] = {}
    matched: dict[str, str] = {}
    for canonical, spec in METRIC_NAMES.items():
        for name in spec.names:
            if spec.kind == "histogram":
                per_bound = collected.buckets.get(name)
                if not per_bound:
                    continue
                bounds = sorted(per_bound)
                cumulative = tuple((bound, per_bound[bound]) for bound in bounds)
                histograms[canonical] = Histogram(
                    cumulative, collected.sums.get(name, 0.0), collected.counts.get(name, cumulative[-1][1])
                )
            else:
                series = _scalar_series(collected, name, spec.kind)
                if not series:
                    continue
                if spec.kind == "info":
                    cache_config.update(series[0][0])
                elif spec.kind == "counter":
                    counters[canonical] = _aggregate([value for _, value in series], spec.aggregation)
                    if canonical == "request_success":
                        for labels, value in series:
                            reason = labels.get(_FINISHED_REASON_LABEL, "unknown")
                            finished[reason] = finished.get(reason, 0.0) + value
                else:
                    gauges[canonical] = _aggregate([value for _, value in series], spec.aggregation)
            matched[canonical] = name
            break
    return MetricsSample(stamp, counters, gauges, histograms, finished, cache_config, matched)


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
        finished_requests=dict(current.finished_by_reason),
        finished_requests_in_window=_finished_in_window(current, previous),
        ttft_p50_s=ttft[0],
        ttft_p95_s=ttft[1],
        itl_p50_s=itl[0],
        itl_p95_s=itl[1],
        e2e_p50_s=e2e[0],
        e2e_p95_s=e2e[1],
        missing=_missing(current, _EXPECTED),
    )
