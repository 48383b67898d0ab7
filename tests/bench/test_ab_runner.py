"""Tests for engine.bench.ab_runner and `quant-tui bench`: methods, the trade-off table, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.bench.ab_result import BenchError, BenchRequest, BenchResult, VariantResult, parse_methods
from engine.bench.ab_runner import run_bench
from engine.bench.load_spec import LoadSpec
from engine.bench.metrics import Outcome, RequestRecord, summarize
from engine.errors import QuantTuiError
from tui.cli import main
from tui.cli.bench_command import format_table


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


def test_table_and_json() -> None:
    text = format_table(RESULT)
    assert "1.50×" in text and "+5.00%" in text and "failed" in text
    assert "50 ms" in text and "10.0 ms" in text
    assert "fp8: fp8 needs a GPU" in text
    data = json.loads(json.dumps(RESULT.to_dict()))
    assert data["baseline"] == "bf16" and len(data["table"]) == 3
    assert data["variants"][1]["load"]["output_throughput"] == pytest.approx(150.0)
    assert data["variants"][1]["load"]["median_tpot_ms"] == pytest.approx(10.0)


def test_bench_needs_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"config\.json"):
        run_bench(BenchRequest(model=tmp_path))


def test_bench_rejects_a_bad_load(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(QuantTuiError, match="concurrency"):
        run_bench(BenchRequest(model=tmp_path, load=LoadSpec(concurrency=0)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "bf16,nope"], "unknown method"),
        (["--model", "/no/such/folder"], "does not exist"),
        (["--model", "demo", "--concurrency", "0"], "concurrency"),
    ],
)
def test_bench_cli_bad_input(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("quant-tui: error: ") and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.e2e
def test_e2e_ab_bf16_against_int8_with_sweep_and_quality(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--model", "demo", "--methods", "bf16,int8-w8a8", "--sweep", "--sweep-max", "2"]
    argv += ["--num-prompts", "4", "--input-len", "16", "--output-len", "8"]
    argv += ["--work-dir", str(tmp_path), "--slo", "ttft:60000,tpot:60000", "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads(capsys.readouterr().out)
    baseline, int8 = data["variants"]
    for variant in (baseline, int8):
        assert variant["error"] is None, variant["error"]
        sweep = variant["sweep"]
        assert [point["max_concurrency"] for point in sweep["curve"]] == [1, 2]
        assert sweep["knee_concurrency"] == 2
        for point in sweep["points"]:
            # Every request counted once by the client and once by the server.
            assert point["completed"] == 4 and point["quant_tui"]["server"]["request_success"] == 4
            assert point["quant_tui"]["server"]["generation_tokens"] == point["total_output_tokens"] == 4 * 8
            assert point["quant_tui"]["reproducibility"]["server_argv"]
        assert variant["server_peak_rss_bytes"] and variant["kv_cache_tokens"]
        assert variant["perplexity"] is not None and variant["perplexity"] > 1.0
    assert baseline["top1_agreement"] == 1.0
    assert 0.5 < int8["top1_agreement"] <= 1.0
    assert Path(int8["model_dir"]).parent == tmp_path
    # The int8 checkpoint's card now carries the measured figures (ratio to the baseline as a %).
    card = (Path(int8["model_dir"]) / "README.md").read_text()
    assert "Not measured yet" not in card and f"{int8['perplexity']:.3f}" in card
    table = data["table"]
    assert table[1]["relative_weights"] < 0.8 and table[1]["relative_tokens_per_s"] > 0
    assert data["capacity"].endswith("holds 2 concurrent users (the most tried)")
    assert "bf16" in data["capacity"] and "int8-w8a8" in data["capacity"]
    assert "output tokens/s vs concurrency" in data["plots"]
