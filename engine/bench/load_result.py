"""What a load run measured: progress while it runs, and every request's record with the figures after."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.bench.load_spec import LoadSpec
from engine.bench.metrics import DEFAULT_PERCENTILES, Outcome, RequestRecord, ServeSummary, summarize

__all__ = ["LoadProgress", "LoadResult"]


@dataclass(frozen=True, slots=True)
class LoadProgress:
    """Progress after each finished request.

    Attributes:
        finished: Requests finished so far (any outcome).
        total: Requests planned, or ``None`` for a duration-bound load.
        ok: Requests that completed.
        failed: Requests that did not.
        generated_tokens: Tokens generated so far.
        elapsed_s: Seconds since the load started.
    """

    finished: int
    total: int | None
    ok: int
    failed: int
    generated_tokens: int
    elapsed_s: float


@dataclass(frozen=True)
class LoadResult:
    """Everything a load run measured; ``records`` holds every timed request released, whatever its outcome.

    Attributes:
        spec: The load that was asked for.
        model: The model name the requests used.
        duration_s: Seconds from the first dispatch to the end of the last request (vLLM ``duration``).
        records: One record per timed request, in release order (warm-ups are not in it).
        stopped: Whether the stop event ended the load early.
        warmup_outcomes: Outcomes of the warm-up requests.
    """

    spec: LoadSpec
    model: str
    duration_s: float
    records: tuple[RequestRecord, ...]
    stopped: bool = False
    warmup_outcomes: Mapping[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        counts = Counter(record.outcome.value for record in self.records)
        object.__setattr__(
            self, "outcomes", {outcome.value: counts.get(outcome.value, 0) for outcome in Outcome}
        )

    @property
    def ok_requests(self) -> int:
        """Requests that completed."""
        return self.outcomes[Outcome.OK.value]

    @property
    def failed_requests(self) -> int:
        """Requests that did not complete, for any reason."""
        return len(self.records) - self.ok_requests

    @property
    def generated_tokens(self) -> int:
        """Tokens generated over all requests (partial streams of failed ones included)."""
        return sum(record.generated_tokens for record in self.records)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens the server reported over all requests."""
        return sum(record.prompt_tokens or 0 for record in self.records)

    @property
    def output_tokens_per_s(self) -> float | None:
        """Output tokens of completed requests per second of wall time (vLLM ``output_throughput``)."""
        return self.serve_summary().output_throughput

    def serve_summary(
        self, percentiles: Sequence[float] = DEFAULT_PERCENTILES, slo_ms: Mapping[str, float] | None = None
    ) -> ServeSummary:
        """The figures of ``vllm bench serve``, from these records."""
        return summarize(self.records, self.duration_s, percentiles, slo_ms)

    def summary(self, slo_ms: Mapping[str, float] | None = None) -> dict[str, Any]:
        """The headline figures under vLLM's result keys, plus the outcomes (no per-request records)."""
        data = {
            "model_id": self.model,
            "max_concurrency": self.spec.concurrency,
            "request_rate": self.spec.request_rate,
            "num_prompts": len(self.records),
            **self.serve_summary(slo_ms=slo_ms).to_vllm_json(),
        }
        data["outcomes"] = dict(self.outcomes)
        data["stopped"] = self.stopped
        return data

    def detailed(self) -> dict[str, list[Any]]:
        """vLLM's ``--save-detailed`` lists (seconds), one entry per request in release order."""
        return {
            "input_lens": [record.prompt_tokens for record in self.records],
            "output_lens": [record.generated_tokens if record.ok else 0 for record in self.records],
            "ttfts": [record.ttft_s for record in self.records],
            "itls": [list(record.itl_s) for record in self.records],
            "latencies": [record.e2el_s for record in self.records],
            "start_times": [record.started_s for record in self.records],
            "queue_times": [record.queue_s for record in self.records],
            "errors": [record.error or "" for record in self.records],
        }

    def to_dict(self) -> dict[str, Any]:
        """The summary plus the spec and every request record."""
        data = self.summary()
        data["spec"] = asdict(self.spec)
        data["records"] = [{**asdict(record), "outcome": record.outcome.value} for record in self.records]
        return data
