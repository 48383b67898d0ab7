"""Capacity: step the concurrency up, find the highest load that still meets the SLO, and draw the curves."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.bench.result import BenchRun
from engine.errors import QuantTuiError

__all__ = [
    "DEFAULT_SWEEP_SLO",
    "SweepError",
    "SweepResult",
    "capacity_line",
    "concurrency_levels",
    "meets_slo",
    "plot_sweeps",
    "run_sweep",
]

# The knee is judged on p95 latencies, a common interactive SLO (the example).
DEFAULT_SWEEP_SLO: Mapping[str, float] = {"ttft": 500.0, "tpot": 50.0}
SWEEP_PERCENTILE = 95.0
_LABELS = {"ttft": "TTFT", "tpot": "TPOT", "e2el": "E2EL"}


class SweepError(QuantTuiError):
    """The sweep cannot run as asked."""


def concurrency_levels(max_concurrency: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``max_concurrency``, which is included even when not a power of two.

    Raises:
        SweepError: ``max_concurrency`` is below 1.
    """
    if max_concurrency < 1:
        raise SweepError(f"the sweep needs a maximum concurrency of at least 1, not {max_concurrency}")
    levels = []
    level = 1
    while level < max_concurrency:
        levels.append(level)
        level *= 2
    levels.append(max_concurrency)
    return tuple(levels)


def kv_bound_concurrency(kv_capacity_tokens: int | None, tokens_per_request: int, cap: int) -> int:
    """The most requests whose prompt and output all fit in the KV cache at once, at most ``cap``."""
    if not kv_capacity_tokens or tokens_per_request < 1:
        return cap
    return max(1, min(cap, kv_capacity_tokens // tokens_per_request))


def meets_slo(run: BenchRun, slo_ms: Mapping[str, float]) -> bool:
    """Whether every request completed and each p95 latency of the run is within its bound."""
    summary = run.summary
    if summary.failed or not summary.completed:
        return False
    for name, bound in slo_ms.items():
        value = summary.stats(name).percentile(SWEEP_PERCENTILE)
        if value is not None and value > bound:
            return False
    return True


@dataclass(frozen=True)
class SweepResult:
    """One label's sweep (a method, or the server measured).

    Attributes:
        label: What was swept.
        slo_ms: The bounds the knee is judged against (p95, ms).
        points: One run per concurrency level, in order.
        knee: The highest concurrency meeting the SLO; ``None`` when even 1 does not.
    """

    label: str
    slo_ms: Mapping[str, float]
    points: tuple[BenchRun, ...]
    knee: int | None

    def to_json(self) -> dict[str, Any]:
        """The curves (per level: throughput and p95 latencies) and the knee."""
        return {
            "label": self.label,
            "slo_ms": dict(self.slo_ms),
            "slo_percentile": SWEEP_PERCENTILE,
            "knee_concurrency": self.knee,
            "curve": [
                {
                    "max_concurrency": point.load.spec.concurrency,
                    "output_throughput": point.summary.output_throughput,
                    "request_throughput": point.summary.request_throughput,
                    "p95_ttft_ms": point.summary.ttft.percentile(SWEEP_PERCENTILE),
                    "p95_tpot_ms": point.summary.tpot.percentile(SWEEP_PERCENTILE),
                    "p95_e2el_ms": point.summary.e2el.percentile(SWEEP_PERCENTILE),
                    "meets_slo": meets_slo(point, self.slo_ms),
                }
                for point in self.points
            ],
            "points": [point.to_json() for point in self.points],
        }


def run_sweep(
    label: str,
    measure: Callable[[int], BenchRun],
    levels: Sequence[int],
    slo_ms: Mapping[str, float],
    stop_after_miss: bool = True,
) -> SweepResult:
    """Measures each concurrency level in turn; the knee is the highest level that meets the SLO.

    Args:
        label: What is swept.
        measure: Runs the load at one concurrency.
        levels: Increasing concurrency levels.
        slo_ms: p95 bounds in ms.
        stop_after_miss: Stop at the first level that misses the SLO (higher ones only get worse).
    """
    points: list[BenchRun] = []
    knee: int | None = None
    for level in levels:
        point = measure(level)
        points.append(point)
        if meets_slo(point, slo_ms):
            knee = level
        elif stop_after_miss:
            break
    return SweepResult(label, dict(slo_ms), tuple(points), knee)


def _slo_words(slo_ms: Mapping[str, float]) -> str:
    parts = [f"{_LABELS[name]} ≤ {bound:g} ms" for name, bound in slo_ms.items()]
    return "p95 " + " and ".join(parts) if parts else "no SLO"


def capacity_line(sweeps: Sequence[SweepResult]) -> str:
    """One plain sentence: "int8-w8a8 holds 4 concurrent users at p95 TTFT ≤ 500 ms and TPOT ≤ 50 ms on this
    machine; bf16 holds 2"."""
    if not sweeps:
        return ""

    def holds(sweep: SweepResult) -> str:
        if sweep.knee is None:
            return "holds no load within the SLO"
        tested = max(point.load.spec.concurrency for point in sweep.points)
        limit = " (the most tried)" if sweep.knee == tested else ""
        return f"holds {sweep.knee} concurrent user{'s' if sweep.knee != 1 else ''}{limit}"

    ordered = sorted(sweeps, key=lambda sweep: -(sweep.knee or 0))
    first, *rest = ordered
    text = f"{first.label} {holds(first)} at {_slo_words(first.slo_ms)} on this machine"
    if rest:
        text += "; " + "; ".join(f"{sweep.label} {holds(sweep)}" for sweep in rest)
    return text


def plot_sweeps(sweeps: Sequence[SweepResult], width: int = 80, height: int = 18) -> str:
    """Output tokens/s and p95 TTFT against concurrency, per label, drawn as terminal text with plotext."""
    import plotext as plt

    charts = []
    for title, key in (("output tokens/s", "output_throughput"), ("p95 TTFT (ms)", "p95_ttft_ms")):
        plt.clear_figure()
        plt.plotsize(width, height)
        plt.theme("clear")
        for sweep in sweeps:
            curve = sweep.to_json()["curve"]
            xs = [point["max_concurrency"] for point in curve if point[key] is not None]
            ys = [point[key] for point in curve if point[key] is not None]
            if xs:
                plt.plot(xs, ys, label=sweep.label, marker="dot")
        plt.title(f"{title} vs concurrency")
        plt.xlabel("concurrent requests")
        charts.append(plt.build())
    plt.clear_figure()
    return "\n".join(charts)
