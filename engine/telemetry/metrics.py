"""Parsing vLLM's Prometheus ``/metrics`` text into quant-tui's canonical names, whatever vLLM version wrote it."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from engine.errors import QuantTuiError
from engine.telemetry.histogram import Histogram

__all__ = [
    "METRIC_NAMES",
    "MetricSpec",
    "MetricsError",
    "MetricsSample",
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

    def __post_init__(self) -> None:
        # One scrape never changes: read-only copies, so no holder of a snapshot can alter another's.
        for name in (
            "counters",
            "gauges",
            "histograms",
            "finished_by_reason",
            "cache_config",
            "matched_names",
        ):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))


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


def _sample_names(spec: MetricSpec) -> tuple[str, ...]:
    """The sample names a figure's metric can appear under in the text exposition."""
    suffixes = {
        "counter": ("", "_total"),
        "histogram": _HISTOGRAM_SUFFIXES,
        "gauge": ("",),
        "info": ("",),
    }[spec.kind]
    return tuple(name + suffix for name in spec.names for suffix in suffixes)


# Every sample name quant-tui reads. vLLM publishes ~400 samples (python_gc_*, http_*, a dozen
# histograms the dashboard does not show); handing only these ~90 to the parser makes a poll about
# four times cheaper, which is most of the dashboard's CPU with an idle server.
_WANTED_SAMPLES = frozenset(name for spec in METRIC_NAMES.values() for name in _sample_names(spec))
# The names HELP and TYPE lines give them (a counter's with or without ``_total``, a histogram's base).
_WANTED_FAMILIES = frozenset(
    name + suffix for spec in METRIC_NAMES.values() for name in spec.names for suffix in ("", "_total")
)
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _wanted_lines(text: str) -> tuple[str, list[tuple[str, str]], bool]:
    """Splits the exposition into the samples quant-tui reads and the rest of what it must check.

    Samples of metrics quant-tui never reads (and their HELP/TYPE lines) are dropped. A line that does
    not start with a metric name (garbage, an HTML page) is kept, so the parser still rejects a body
    that is not Prometheus text.

    Returns:
        The kept lines that are not samples, the wanted samples as (name and labels, the rest of the
        line), and whether any sample at all had a vLLM name (kept or not).
    """
    kept = []
    samples = []
    any_vllm = False
    for line in text.splitlines():
        if line.startswith("#"):
            words = line.split(maxsplit=3)
            if (
                len(words) >= 3
                and words[1] in ("HELP", "TYPE")
                and _normalize(words[2]) not in _WANTED_FAMILIES
            ):
                continue
            kept.append(line)
            continue
        match = _METRIC_NAME.match(line)
        if match is not None and line[match.end() : match.end() + 1] in ("{", " ", "\t"):
            name = _normalize(match.group())
            any_vllm = any_vllm or name.startswith("vllm:")
            if name not in _WANTED_SAMPLES:
                continue
            # The labels end at the line's last brace: a value or a timestamp holds none.
            head_end = line.rindex("}") + 1 if line[match.end()] == "{" and "}" in line else match.end()
            samples.append((line[:head_end], line[head_end:]))
            continue
        kept.append(line)
    return "\n".join(kept) + "\n", samples, any_vllm


@functools.lru_cache(maxsize=1024)
def _series(head: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The name and labels of a sample's ``name{labels}``, read by prometheus_client's parser.

    A server publishes the same few dozen series on every scrape: each is parsed once, not every poll
    (the labels' parsing was most of a poll's CPU).
    """
    from prometheus_client.parser import text_string_to_metric_families

    (sample,) = next(iter(text_string_to_metric_families(head + " 0\n"))).samples
    return sample.name, tuple(sample.labels.items())


def _not_prometheus(error: Exception) -> MetricsError:
    excerpt = " ".join(str(error).split())[:_ERROR_EXCERPT_CHARS]
    return MetricsError(
        f"the /metrics answer is not Prometheus text ({excerpt}); point at a vLLM server's base URL"
    )


def _collect(text: str) -> tuple[_Collected, bool]:
    """Groups every sample by name; works per sample so missing or odd ``# TYPE`` lines do not matter.

    Returns:
        The samples, and whether any sample at all had a vLLM name.
    """
    from prometheus_client.parser import text_string_to_metric_families

    collected = _Collected()
    rest, wanted, any_vllm = _wanted_lines(text)
    try:
        # What is not a sample quant-tui reads is still checked: garbage is rejected.
        families = list(text_string_to_metric_families(rest))
        read = [(*_series(head), float(tail.split()[0])) for head, tail in wanted]
    except (ValueError, TypeError, IndexError, StopIteration) as error:
        raise _not_prometheus(error) from error
    samples = [
        (sample.name, tuple(sample.labels.items()), sample.value)
        for family in families
        for sample in family.samples
    ]
    for sample_name, sample_labels, sample_value in [*samples, *read]:
        name = _normalize(sample_name)
        value = float(sample_value)
        labels = dict(sample_labels)
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
    return collected, any_vllm


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
    collected, any_vllm = _collect(text)
    if not any_vllm:
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
