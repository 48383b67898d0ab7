"""engine/bench/ab_result.py: the --methods list, the trade-off rows against the baseline and the JSON result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.bench.ab_result import BenchError, BenchResult, VariantResult, parse_methods
from engine.bench.load_spec import LoadSpec
from engine.bench.metrics import Outcome, RequestRecord, summarize
from engine.errors import QuantTuiError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bf16,int8-w8a8,w4a16,fp8", ("bf16", "int8-w8a8", "w4a16", "fp8")),
        (" bf16 , fp8 ", ("bf16", "fp8")),
        ("w4a16,bf16", ("w4a16", "bf16")),
        ("fp8", ("fp8",)),
    ],
)
def test_parse_methods(text: str, expected: tuple[str, ...]) -> None:
    assert parse_methods(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "at least one"),
        (" , ", "at least one"),
        ("bf16,int3", "unknown method 'int3'"),
        ("fp8,fp8", "twice"),
    ],
)
def test_parse_methods_rejects(text: str, message: str) -> None:
    with pytest.raises(BenchError, match=message) as caught:
        parse_methods(text)
    assert isinstance(caught.value, QuantTuiError)


def variant(
    method: str, tokens_per_s: float | None, weights: int, rss: int, ppl: float | None
) -> VariantResult:
    # One request of 100 tokens: first after 50 ms, then one every 10 ms; the run took 100/tokens_per_s s.
    record = RequestRecord(
        index=0, outcome=Outcome.OK, started_s=0.0, latency_s=1.05, ttft_s=0.05,
        generated_tokens=100, last_token_s=0.05 + 99 * 0.01,
    )  # fmt: skip
    summary = None if tokens_per_s is None else summarize([record], 100 / tokens_per_s)
    return VariantResult(
        method=method,
        model_dir=Path(f"/models/{method}"),
        weights_bytes=weights,
        summary=summary,
        server_peak_rss_bytes=rss,
        perplexity=ppl,
        top1_agreement=None if ppl is None else 0.9,
    )


RESULT = BenchResult(
    variants=(
        variant("bf16", 100.0, 2_000_000, 4_000_000_000, 10.0),
        variant("int8-w8a8", 150.0, 1_000_000, 3_000_000_000, 10.5),
        VariantResult(method="fp8", model_dir=None, error="fp8 needs a GPU of compute capability 8.9"),
    ),
    load=LoadSpec(concurrency=4, requests=32),
    hardware="CPU only: test",
)


@pytest.mark.parametrize(
    ("row", "key", "expected"),
    [
        (0, "relative_tokens_per_s", 1.0),
        (1, "relative_tokens_per_s", 1.5),
        (1, "relative_weights", 0.5),
        (1, "relative_server_memory", 0.75),
        (1, "perplexity_change", 0.05),
        (0, "perplexity_change", 0.0),
        (2, "relative_tokens_per_s", None),
        (2, "error", "fp8 needs a GPU of compute capability 8.9"),
    ],
)
def test_trade_off_rows(row: int, key: str, expected: object) -> None:
    value = RESULT.rows()[row][key]
    assert value == (pytest.approx(expected) if isinstance(expected, float) else expected)


def test_json_carries_the_baseline_table_and_vllm_keys() -> None:
    data = json.loads(json.dumps(RESULT.to_dict()))
    assert data["baseline"] == "bf16" and len(data["table"]) == 3
    assert data["variants"][1]["load"]["output_throughput"] == pytest.approx(150.0)
    assert data["variants"][1]["load"]["median_tpot_ms"] == pytest.approx(10.0)
