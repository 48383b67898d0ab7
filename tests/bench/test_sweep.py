"""Tests for engine.bench.sweep: concurrency levels, the SLO, the knee, its sentence and plot."""

from __future__ import annotations

import pytest

from engine.bench.load_result import LoadResult
from engine.bench.load_spec import LoadSpec
from engine.bench.metrics import Outcome, RequestRecord
from engine.bench.result import BenchRun
from engine.bench.sweep import (
    SweepError,
    capacity_line,
    concurrency_levels,
    kv_bound_concurrency,
    meets_slo,
    plot_sweeps,
    run_sweep,
)


@pytest.mark.parametrize(
    ("top", "levels"), [(1, (1,)), (4, (1, 2, 4)), (6, (1, 2, 4, 6)), (16, (1, 2, 4, 8, 16))]
)
def test_concurrency_levels(top: int, levels: tuple[int, ...]) -> None:
    assert concurrency_levels(top) == levels


def test_concurrency_levels_rejects_zero() -> None:
    with pytest.raises(SweepError):
        concurrency_levels(0)


@pytest.mark.parametrize(
    ("capacity", "per_request", "cap", "expected"),
    [(None, 128, 64, 64), (1024, 128, 64, 8), (100, 128, 64, 1), (10_000, 128, 16, 16)],
)
def test_kv_bound(capacity: int | None, per_request: int, cap: int, expected: int) -> None:
    assert kv_bound_concurrency(capacity, per_request, cap) == expected


def synthetic_run(
    label: str, concurrency: int, ttft_s: float, tpot_s: float, failed: bool = False
) -> BenchRun:
    """Four identical 11-token requests: TTFT ``ttft_s``, then 10 gaps of ``tpot_s``."""
    gaps = (tpot_s,) * 10
    last = ttft_s + sum(gaps)
    records = [
        RequestRecord(i, Outcome.OK, 0.0, last, ttft_s, 8, 11, True, last, itl_s=gaps, arrival_s=0.0)
        for i in range(4)
    ]
    if failed:
        records[0] = RequestRecord(0, Outcome.TIMEOUT, 0.0, 1.0, error="no complete answer within 1 s")
    load = LoadResult(LoadSpec(concurrency=concurrency, model="m"), "m", 2.0, tuple(records))
    return BenchRun(label, "http://x", load, load.serve_summary())


SLO = {"ttft": 500.0, "tpot": 50.0}


@pytest.mark.parametrize(
    ("run", "meets"),
    [
        (synthetic_run("a", 1, 0.5, 0.05), True),  # bounds are inclusive
        (synthetic_run("a", 1, 0.501, 0.01), False),
        (synthetic_run("a", 1, 0.1, 0.051), False),
        (synthetic_run("a", 1, 0.1, 0.01, failed=True), False),  # a failed request misses the SLO
    ],
)
def test_meets_slo(run: BenchRun, meets: bool) -> None:
    assert meets_slo(run, SLO) is meets


def test_sweep_finds_the_knee_stops_after_a_miss_and_says_it_plainly() -> None:
    # TTFT grows 150 ms per doubling: 1 -> 0.15 s, 2 -> 0.30, 4 -> 0.45, 8 -> 0.60 (miss).
    asked: list[int] = []

    def int8(concurrency: int) -> BenchRun:
        asked.append(concurrency)
        return synthetic_run("int8-w8a8", concurrency, 0.15 * (concurrency.bit_length()), 0.02)

    levels = concurrency_levels(16)
    fast = run_sweep("int8-w8a8", int8, levels, SLO)
    assert fast.knee == 4 and asked == [1, 2, 4, 8]
    slow = run_sweep("bf16", lambda c: synthetic_run("bf16", c, 0.2 * c, 0.03), levels, SLO)
    assert slow.knee == 2
    none = run_sweep("w4a16", lambda c: synthetic_run("w4a16", c, 0.9, 0.03), levels, SLO)
    assert none.knee is None
    line = capacity_line([slow, fast, none])
    assert line == (
        "int8-w8a8 holds 4 concurrent users at p95 TTFT ≤ 500 ms and TPOT ≤ 50 ms on this machine; "
        "bf16 holds 2 concurrent users; w4a16 holds no load within the SLO"
    )
    curve = fast.to_json()["curve"]
    assert [point["max_concurrency"] for point in curve] == [1, 2, 4, 8]
    assert [point["meets_slo"] for point in curve] == [True, True, True, False]
    assert curve[0]["output_throughput"] == pytest.approx(44 / 2.0)
    chart = plot_sweeps([fast, slow])
    assert "output tokens/s vs concurrency" in chart and "int8-w8a8" in chart
