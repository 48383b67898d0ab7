"""Tests for engine.bench.metrics and engine.bench.arrivals: hand-computed figures from synthetic stamps, and vLLM's own."""

from __future__ import annotations

import math
import random

import pytest

from engine.bench.arrivals import arrival_offsets
from engine.bench.metrics import (
    MetricStats,
    Outcome,
    RequestRecord,
    SloError,
    parse_slo,
    percentile_key,
    summarize,
)

# Three completed requests and one failure, two seconds in all. Worked out by hand:
#   r0 start 0.0: TTFT 100 ms, gaps 20 and 30 ms, last token at 150 ms, 3 tokens -> TPOT (150-100)/2 = 25 ms
#   r1 start 0.5: TTFT 200 ms, gap 50 ms, last token at 250 ms, 2 tokens           -> TPOT 50 ms
#   r2 start 1.0: TTFT 300 ms, no gap, 1 token                                     -> no TPOT (0 for goodput)
#   r3 failed with 5 partial tokens: counted in `failed` only.
RECORDS = (
    RequestRecord(0, Outcome.OK, 0.0, 0.16, 0.1, 10, 3, True, 0.15, 200, None, 0.0, (0.02, 0.03)),
    RequestRecord(1, Outcome.OK, 0.5, 0.26, 0.2, 10, 2, True, 0.25, 200, None, 0.0, (0.05,)),
    RequestRecord(2, Outcome.OK, 1.0, 0.31, 0.3, 20, 1, True, 0.3, 200, None, 0.0, ()),
    RequestRecord(
        3, Outcome.HTTP_ERROR, 1.2, 0.1, 0.05, 7, 5, True, 0.09, 500, "HTTP 500: boom", 0.0, (0.04,)
    ),
)
DURATION_S = 2.0


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("completed", 3),
        ("failed", 1),
        ("total_input_tokens", 40),
        ("total_output_tokens", 6),
        ("request_throughput", 1.5),
        ("output_throughput", 3.0),
        ("total_token_throughput", 23.0),
        ("request_goodput", None),
        # Token stamps 0.10 0.12 0.15 0.70 0.75 fall in second 0, 1.30 in second 1.
        ("max_output_tokens_per_s", 5.0),
        ("max_concurrent_requests", 2),
        ("mean_ttft_ms", 200.0),
        ("median_ttft_ms", 200.0),
        ("std_ttft_ms", math.sqrt(20000 / 3)),
        ("p90_ttft_ms", 280.0),
        ("p99_ttft_ms", 298.0),
        ("mean_tpot_ms", 37.5),
        ("median_tpot_ms", 37.5),
        ("std_tpot_ms", 12.5),
        ("p95_tpot_ms", 48.75),
        ("mean_itl_ms", 100 / 3),
        ("median_itl_ms", 30.0),
        ("std_itl_ms", math.sqrt((400 + 900 + 2500) / 3 - (100 / 3) ** 2)),
        ("p90_itl_ms", 46.0),
        ("mean_e2el_ms", 700 / 3),
        ("median_e2el_ms", 250.0),
        ("p90_e2el_ms", 290.0),
        ("p50_e2el_ms", 250.0),
    ],
)
def test_summary_figures_by_hand(key: str, expected: float | None) -> None:
    data = summarize(RECORDS, DURATION_S).to_vllm_json()
    assert data[key] == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("slo", "good"),
    [
        ({"ttft": 250.0, "tpot": 40.0}, 1),  # r0 only
        ({"e2el": 250.0}, 2),  # bounds are inclusive: r1's 250 ms passes
        ({"tpot": 0.0}, 1),  # a 1-token request has TPOT 0 for goodput (as vLLM)
        ({"ttft": 1000.0, "tpot": 1000.0, "e2el": 1000.0}, 3),  # the failure never counts
    ],
)
def test_goodput(slo: dict[str, float], good: int) -> None:
    summary = summarize(RECORDS, DURATION_S, slo_ms=slo)
    assert summary.request_goodput == pytest.approx(good / DURATION_S)
    assert summary.slo_attainment == pytest.approx(good / 3)


def test_failures_keep_their_reasons_and_every_outcome_is_listed() -> None:
    summary = summarize(RECORDS, DURATION_S)
    assert summary.failure_reasons == (("HTTP 500: boom", 1),)
    assert summary.outcomes["ok"] == 3 and summary.outcomes["http_error"] == 1
    assert set(summary.outcomes) == {outcome.value for outcome in Outcome}


def test_no_completed_request_leaves_latency_empty_not_zero() -> None:
    summary = summarize(RECORDS[3:], DURATION_S)
    assert summary.completed == 0 and summary.output_throughput == 0.0
    assert summary.ttft.count == 0 and summary.to_vllm_json()["median_ttft_ms"] is None
    assert summarize((), 0.0).request_throughput is None


@pytest.mark.parametrize(("p", "key"), [(99.0, "p99"), (99.9, "p99.9"), (50.0, "p50"), (2.5, "p2.5")])
def test_percentile_keys_are_spelled_as_vllm(p: float, key: str) -> None:
    assert percentile_key(p) == key


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [([1.0], 99.0, 1000.0), ([0.0, 1.0], 25.0, 250.0), ([0.0, 0.1, 0.2, 0.3, 0.4], 95.0, 380.0)],
)
def test_linear_percentiles(values: list[float], p: float, expected: float) -> None:
    assert MetricStats.of(values, (p,)).percentile(p) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ttft:500,tpot:50,e2el:5000", {"ttft": 500.0, "tpot": 50.0, "e2el": 5000.0}),
        ("ttft:200 tpot:50", {"ttft": 200.0, "tpot": 50.0}),
        ("TTFT:0.5", {"ttft": 0.5}),
        ("", {}),
        (None, {}),
    ],
)
def test_parse_slo(text: str | None, expected: dict[str, float]) -> None:
    assert parse_slo(text) == expected


@pytest.mark.parametrize("text", ["itl:50", "ttft", "ttft:-1", "ttft:abc", "ttft:1,ttft:2", "ttft:inf"])
def test_bad_slo_is_one_line_error(text: str) -> None:
    with pytest.raises(SloError) as caught:
        parse_slo(text)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("count", "rate", "burstiness", "expected"),
    [
        (4, math.inf, 1.0, [0.0, 0.0, 0.0, 0.0]),
        (4, 2.0, math.inf, [0.5, 1.0, 1.5, 2.0]),
        (0, 2.0, 1.0, []),
    ],
)
def test_arrivals_exact_cases(count: int, rate: float, burstiness: float, expected: list[float]) -> None:
    assert arrival_offsets(count, rate, burstiness) == pytest.approx(expected)


@pytest.mark.parametrize("burstiness", [0.5, 1.0, 4.0])
def test_arrivals_end_at_count_over_rate_and_gaps_follow_the_gamma_shape(burstiness: float) -> None:
    offsets = arrival_offsets(4000, 8.0, burstiness, seed=3)
    assert offsets[-1] == pytest.approx(500.0)  # rescaled as vLLM: the last arrival at N / rate
    assert offsets == sorted(offsets) and offsets == arrival_offsets(4000, 8.0, burstiness, seed=3)
    gaps = [b - a for a, b in zip([0.0, *offsets], offsets, strict=False)]
    mean = sum(gaps) / len(gaps)
    variance = sum((gap - mean) ** 2 for gap in gaps) / len(gaps)
    # A gamma of shape k has squared coefficient of variation 1/k.
    assert variance / mean**2 == pytest.approx(1.0 / burstiness, rel=0.15)


def test_matches_vllms_own_calculate_metrics_on_random_stamps() -> None:
    """The same requests through vLLM's calculate_metrics (benchmarks/serve.py) give the same figures."""
    from vllm.benchmarks.datasets import SampleRequest
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncOutput
    from vllm.benchmarks.serve import calculate_metrics

    chooser = random.Random(7)
    records, outputs, inputs = [], [], []
    for index in range(40):
        ok = index % 9 != 4
        tokens = chooser.randint(1, 12)
        gaps = tuple(chooser.uniform(0.001, 0.05) for _ in range(tokens - 1))
        ttft = chooser.uniform(0.01, 0.4)
        start = chooser.uniform(0.0, 3.0)
        prompt = chooser.randint(5, 50)
        last = ttft + sum(gaps)
        outcome = Outcome.OK if ok else Outcome.TIMEOUT
        records.append(
            RequestRecord(index, outcome, start, last, ttft, prompt, tokens, True, last, itl_s=gaps)
        )
        output = RequestFuncOutput()
        output.success, output.ttft, output.itl, output.latency = ok, ttft, list(gaps), last
        output.start_time, output.output_tokens, output.prompt_len = start, tokens, prompt
        outputs.append(output)
        inputs.append(SampleRequest(prompt="x", prompt_len=prompt, expected_output_len=tokens))
    goodput = {"ttft": 200.0, "tpot": 30.0}
    theirs, _ = calculate_metrics(inputs, outputs, 4.0, None, [50.0, 90.0, 99.0], goodput)
    ours = summarize(records, 4.0, (50.0, 90.0, 99.0), goodput)
    data = ours.to_vllm_json()
    for name in (
        "completed",
        "failed",
        "total_input",
        "total_output",
        "request_throughput",
        "request_goodput",
    ):
        key = {"total_input": "total_input_tokens", "total_output": "total_output_tokens"}.get(name, name)
        assert data[key] == pytest.approx(getattr(theirs, name)), name
    for name in (
        "output_throughput",
        "total_token_throughput",
        "max_output_tokens_per_s",
        "max_concurrent_requests",
    ):
        assert data[name] == pytest.approx(getattr(theirs, name)), name
    for metric in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std"):
            key = f"{stat}_{metric}_ms"
            assert data[key] == pytest.approx(getattr(theirs, key)), key
        for p, value in getattr(theirs, f"percentiles_{metric}_ms"):
            assert data[f"{percentile_key(p)}_{metric}_ms"] == pytest.approx(value), (metric, p)
