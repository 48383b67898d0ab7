"""Per-request records and their summary, computed exactly as ``vllm bench serve`` does (vllm/benchmarks/serve.py)."""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import QuantTuiError

__all__ = [
    "DEFAULT_PERCENTILES",
    "SLO_METRICS",
    "MetricStats",
    "Outcome",
    "RequestRecord",
    "ServeSummary",
    "SloError",
    "parse_slo",
    "percentile_key",
    "summarize",
]

# vLLM's --metric-percentiles default is "99"; quant-tui also reports the median's neighbours users ask for.
DEFAULT_PERCENTILES = (50.0, 90.0, 95.0, 99.0)
# The metrics vLLM's --goodput accepts (serve.py: parse_goodput), in milliseconds.
SLO_METRICS = ("ttft", "tpot", "e2el")
_MAX_REASONS = 10


class SloError(QuantTuiError):
    """The service-level objective is not of the form ``ttft:500,tpot:50,e2el:5000``."""


class Outcome(str, enum.Enum):
    """How one request ended."""

    OK = "ok"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    CANCELLED = "cancelled"
    BAD_RESPONSE = "bad_response"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request and how it went; every time is in seconds.

    The stamps follow vLLM's request function (benchmarks/lib/endpoint_request_func.py): the clock
    is read once per streamed message that carries a non-empty ``choices`` list, whether or not its
    text is empty (special tokens stream as empty text).

    Attributes:
        index: Order in which the request was released (0 is the first).
        outcome: How it ended.
        started_s: From the start of the load to the moment the request was sent (vLLM ``start_time``).
        latency_s: From its start to its very end: ``[DONE]``, the close or the error, whatever the outcome.
        ttft_s: From its start to the first message with choices (vLLM ``ttft``).
        prompt_tokens: Prompt tokens as the server counted them (usage), when reported.
        generated_tokens: Output tokens: the usage chunk's ``completion_tokens``, else the number of
            messages with choices.
        tokens_from_usage: Whether ``generated_tokens`` is the server's own count.
        last_token_s: From its start to the last message with choices: vLLM's ``latency`` (E2EL).
        status_code: The HTTP status, when an answer came.
        error: One line on what went wrong, else ``None``.
        arrival_s: From the start of the load to when the arrival process released it; the gap to
            ``started_s`` is the time it waited for a free slot (vLLM ``client_queue_time``).
        itl_s: Every gap between consecutive messages with choices (vLLM ``itl``).
        first_text_s: From its start to the first non-empty text (GuideLLM's and AIPerf's first token).
    """

    index: int
    outcome: Outcome
    started_s: float
    latency_s: float
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    generated_tokens: int = 0
    tokens_from_usage: bool = False
    last_token_s: float | None = None
    status_code: int | None = None
    error: str | None = None
    arrival_s: float | None = None
    itl_s: tuple[float, ...] = ()
    first_text_s: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the request completed."""
        return self.outcome is Outcome.OK

    @property
    def e2el_s(self) -> float | None:
        """vLLM's end-to-end latency: start to the last message with choices."""
        return self.last_token_s

    @property
    def time_per_output_token_s(self) -> float | None:
        """vLLM's TPOT: ``(e2el - ttft) / (output tokens - 1)``; ``None`` under 2 tokens."""
        if self.ttft_s is None or self.last_token_s is None or self.generated_tokens < 2:
            return None
        return (self.last_token_s - self.ttft_s) / (self.generated_tokens - 1)

    @property
    def queue_s(self) -> float | None:
        """Seconds it waited in the client for a free slot after it arrived."""
        return None if self.arrival_s is None else self.started_s - self.arrival_s


def percentile_key(p: float) -> str:
    """vLLM's spelling of a percentile in result keys: ``99`` -> ``p99``, ``99.9`` -> ``p99.9``."""
    return f"p{int(p)}" if int(p) == p else f"p{p}"


def _percentile(ordered: Sequence[float], p: float) -> float:
    """numpy's default (linear) percentile of sorted values, ``p`` in 0..100."""
    position = p / 100.0 * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


@dataclass(frozen=True, slots=True)
class MetricStats:
    """Mean, median, population std and percentiles of one latency metric, in milliseconds.

    Attributes:
        count: How many values went in; 0 leaves every figure ``None`` (vLLM would report 0).
        mean_ms: ``np.mean``.
        median_ms: ``np.median``.
        std_ms: ``np.std`` (population, ddof 0).
        percentiles_ms: ``(p, np.percentile(values, p))`` pairs, linear interpolation.
    """

    count: int
    mean_ms: float | None
    median_ms: float | None
    std_ms: float | None
    percentiles_ms: tuple[tuple[float, float | None], ...]

    @classmethod
    def of(cls, values_s: Iterable[float], percentiles: Sequence[float]) -> MetricStats:
        """The statistics of values given in seconds."""
        ordered = sorted(value * 1000.0 for value in values_s)
        if not ordered:
            return cls(0, None, None, None, tuple((p, None) for p in percentiles))
        mean = math.fsum(ordered) / len(ordered)
        std = math.sqrt(math.fsum((value - mean) ** 2 for value in ordered) / len(ordered))
        return cls(
            len(ordered),
            mean,
            _percentile(ordered, 50.0),
            std,
            tuple((p, _percentile(ordered, p)) for p in percentiles),
        )

    def percentile(self, p: float) -> float | None:
        """The ``p`` percentile in ms, when it was computed."""
        return dict(self.percentiles_ms).get(p)

    def vllm_items(self, name: str) -> dict[str, float | None]:
        """``mean_<name>_ms``, ``median_<name>_ms``, ``std_<name>_ms``, ``p99_<name>_ms``... as vLLM saves them."""
        items: dict[str, float | None] = {
            f"mean_{name}_ms": self.mean_ms,
            f"median_{name}_ms": self.median_ms,
            f"std_{name}_ms": self.std_ms,
        }
        for p, value in self.percentiles_ms:
            items[f"{percentile_key(p)}_{name}_ms"] = value
        return items


def parse_slo(text: str | None) -> dict[str, float]:
    """``"ttft:500,tpot:50"`` (commas or spaces) -> ``{"ttft": 500.0, "tpot": 50.0}``; milliseconds.

    Raises:
        SloError: An unknown metric, a missing or negative value, or a metric given twice.
    """
    if text is None or not text.strip():
        return {}
    slo: dict[str, float] = {}
    for part in text.replace(",", " ").split():
        name, colon, value = part.partition(":")
        name = name.strip().lower()
        if not colon or name not in SLO_METRICS:
            raise SloError(f"{part!r} is not an SLO; write e.g. --slo ttft:500,tpot:50,e2el:5000 (ms)")
        if name in slo:
            raise SloError(f"{name} is given twice in the SLO; give each metric once")
        try:
            bound = float(value)
        except ValueError as error:
            raise SloError(f"{part!r}: the bound must be a number of milliseconds") from error
        if not (bound >= 0 and math.isfinite(bound)):
            raise SloError(f"{part!r}: the bound must be zero or more milliseconds")
        slo[name] = bound
    return slo


def _meets(record: RequestRecord, slo: Mapping[str, float]) -> bool:
    """vLLM's goodput test: every given bound >= the request's value (TPOT is 0 under 2 tokens)."""
    values = {
        "ttft": record.ttft_s or 0.0,
        "tpot": record.time_per_output_token_s or 0.0,
        "e2el": record.e2el_s or 0.0,
    }
    return all(bound / 1000.0 >= values[name] for name, bound in slo.items())


def _peak_tokens_per_second(ok: Sequence[RequestRecord]) -> tuple[float, int]:
    """vLLM's ``max_output_tokens_per_s`` / ``max_concurrent_requests``: peaks over 1-second buckets.

    Token times are rebuilt as ``start + ttft + cumsum(itl)`` (one per message with choices). A
    request counts as concurrent in every bucket it touches, so the concurrency figure can exceed
    the real limit (as it does in vLLM); it is kept for comparison, not as a measure.
    """
    timed = [record for record in ok if record.ttft_s is not None and record.last_token_s is not None]
    if not timed:
        return 0.0, 0
    origin = min(record.started_s for record in timed)
    end = max(record.started_s + (record.last_token_s or 0.0) for record in timed)
    buckets = math.ceil(end - origin) + 1
    tokens = [0] * buckets
    active = [0] * buckets
    for record in timed:
        now = record.started_s + (record.ttft_s or 0.0)
        stamps = [now]
        for gap in record.itl_s:
            now += gap
            stamps.append(now)
        for stamp in stamps:
            bucket = int(stamp - origin)
            if 0 <= bucket < buckets:
                tokens[bucket] += 1
        first = int(record.started_s - origin)
        last = int(record.started_s + (record.last_token_s or 0.0) - origin)
        for second in range(first, last + 1):
            active[second] += 1
    return float(max(tokens)), max(active)


@dataclass(frozen=True)
class ServeSummary:
    """The figures of one load, named after ``vllm bench serve``'s result keys.

    Attributes:
        duration: Seconds from the first dispatch to the last request's end.
        completed: Requests that completed.
        failed: Requests that did not (for any reason, cancelled ones included).
        total_input_tokens: Prompt tokens of completed requests.
        total_output_tokens: Output tokens of completed requests.
        request_throughput: ``completed / duration``.
        request_goodput: Completed requests meeting the SLO per second; ``None`` without an SLO.
        output_throughput: ``total_output_tokens / duration``.
        total_token_throughput: ``(total_input_tokens + total_output_tokens) / duration``.
        max_output_tokens_per_s: Most output tokens in any 1-second bucket.
        max_concurrent_requests: vLLM's bucketed concurrency peak (see ``_peak_tokens_per_second``).
        ttft: Time to first token of completed requests.
        tpot: Time per output token after the first, of completed requests with 2 tokens or more.
        itl: Every inter-token gap of completed requests, pooled.
        e2el: End-to-end latency of completed requests.
        slo_ms: The SLO the goodput was measured against (ms).
        slo_attainment: Share of completed requests meeting the SLO; ``None`` without an SLO.
        failure_reasons: ``(reason, count)`` for failed requests, most frequent first (at most 10).
        outcomes: Requests per outcome, every outcome listed.
    """

    duration: float
    completed: int
    failed: int
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float | None
    request_goodput: float | None
    output_throughput: float | None
    total_token_throughput: float | None
    max_output_tokens_per_s: float
    max_concurrent_requests: int
    ttft: MetricStats
    tpot: MetricStats
    itl: MetricStats
    e2el: MetricStats
    slo_ms: Mapping[str, float] = field(default_factory=dict)
    slo_attainment: float | None = None
    failure_reasons: tuple[tuple[str, int], ...] = ()
    outcomes: Mapping[str, int] = field(default_factory=dict)

    def stats(self, name: str) -> MetricStats:
        """One of ``ttft``, ``tpot``, ``itl``, ``e2el``."""
        return {"ttft": self.ttft, "tpot": self.tpot, "itl": self.itl, "e2el": self.e2el}[name]

    def to_vllm_json(self) -> dict[str, Any]:
        """The summary under vLLM's result keys (``completed``, ``median_tpot_ms``, ``p99_ttft_ms``, ...)."""
        data: dict[str, Any] = {
            "duration": self.duration,
            "completed": self.completed,
            "failed": self.failed,
            "total_input_tokens": self.total_input_tokens,
            "total_output_tokens": self.total_output_tokens,
            "request_throughput": self.request_throughput,
            "request_goodput": self.request_goodput,
            "output_throughput": self.output_throughput,
            "total_token_throughput": self.total_token_throughput,
            "max_output_tokens_per_s": self.max_output_tokens_per_s,
            "max_concurrent_requests": self.max_concurrent_requests,
        }
        for name in ("ttft", "tpot", "itl", "e2el"):
            data.update(self.stats(name).vllm_items(name))
        return data

    def to_json(self) -> dict[str, Any]:
        """:meth:`to_vllm_json` plus the outcomes, the failure reasons and the SLO attainment."""
        return {
            **self.to_vllm_json(),
            "outcomes": dict(self.outcomes),
            "failure_reasons": [list(pair) for pair in self.failure_reasons],
            "slo_attainment": self.slo_attainment,
        }


def summarize(
    records: Sequence[RequestRecord],
    duration_s: float,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    slo_ms: Mapping[str, float] | None = None,
) -> ServeSummary:
    """The summary of a load, as vLLM's ``calculate_metrics`` computes it.

    Args:
        records: Every request of the timed run (warm-ups left out).
        duration_s: The run's wall time, first dispatch to last end.
        percentiles: Percentiles to report, 0..100.
        slo_ms: Goodput bounds in ms, keys from :data:`SLO_METRICS`.

    Returns:
        The summary; throughputs are ``None`` for a zero duration, latency stats empty without completions.
    """
    slo = dict(slo_ms or {})
    ok = [record for record in records if record.ok]
    failed = [record for record in records if not record.ok]
    input_tokens = sum(record.prompt_tokens or 0 for record in ok)
    output_tokens = sum(record.generated_tokens for record in ok)

    def per_second(amount: float) -> float | None:
        return amount / duration_s if duration_s > 0 else None

    good = sum(1 for record in ok if _meets(record, slo)) if slo else 0
    reasons = Counter(record.error or record.outcome.value for record in failed)
    counts = Counter(record.outcome.value for record in records)
    peak_tokens, peak_requests = _peak_tokens_per_second(ok)
    return ServeSummary(
        duration=duration_s,
        completed=len(ok),
        failed=len(failed),
        total_input_tokens=input_tokens,
        total_output_tokens=output_tokens,
        request_throughput=per_second(len(ok)),
        request_goodput=per_second(good) if slo else None,
        output_throughput=per_second(output_tokens),
        total_token_throughput=per_second(input_tokens + output_tokens),
        max_output_tokens_per_s=peak_tokens,
        max_concurrent_requests=peak_requests,
        ttft=MetricStats.of((r.ttft_s for r in ok if r.ttft_s is not None), percentiles),
        tpot=MetricStats.of(
            (t for t in (r.time_per_output_token_s for r in ok) if t is not None), percentiles
        ),
        itl=MetricStats.of((gap for r in ok for gap in r.itl_s), percentiles),
        e2el=MetricStats.of((r.e2el_s for r in ok if r.e2el_s is not None), percentiles),
        slo_ms=slo,
        slo_attainment=(good / len(ok) if ok else None) if slo else None,
        failure_reasons=tuple(reasons.most_common(_MAX_REASONS)),
        outcomes={outcome.value: counts.get(outcome.value, 0) for outcome in Outcome},
    )
