"""tui/cli/bench_command.py: the A/B table, one-line errors, and `bench --model demo --methods ...` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.test_ab_result import RESULT
from tui.cli import main
from tui.cli.bench_command import format_table


def test_table_shows_ratios_latencies_and_the_failed_variant() -> None:
    text = format_table(RESULT)
    assert "1.50×" in text and "+5.00%" in text and "failed" in text
    assert "50 ms" in text and "10.0 ms" in text
    assert "fp8: fp8 needs a GPU" in text


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
        # Each variant's server is the plan's: vLLM's KV tokens and concurrency are the predicted ones.
        assert variant["plan_check"]["exact"] is True, variant["plan_check"]
        kv = next(c for c in variant["plan_check"]["checks"] if c["name"] == "KV cache tokens")
        assert kv["actual"] == variant["kv_cache_tokens"] and kv["difference_pct"] == 0
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


def test_table_ends_with_each_variant_plan_against_vllm() -> None:
    from dataclasses import replace

    from engine.bench.ab_result import BenchResult
    from engine.serve.plan_check import FactCheck, PlanVsActual

    # The demo model on a CPU box: 1 GiB of KV at 2,048 B a token is 524,288 tokens, 256.0× of 2,048.
    check = PlanVsActual(
        backend="cpu",
        checks=(
            FactCheck("KV cache tokens", 524_288, 524_288, 0.0, must_match=True),
            FactCheck("max concurrency", 256.0, 256.0, 0.0, must_match=True),
        ),
    )
    variants = (replace(RESULT.variants[0], plan_check=check), *RESULT.variants[1:])
    text = format_table(BenchResult(variants=variants, load=RESULT.load, hardware=RESULT.hardware))
    lines = text.splitlines()
    start = lines.index("bf16: plan vs. vLLM at start-up (exact)")
    assert lines[start + 1].split() == [
        "KV",
        "cache",
        "tokens",
        "plan",
        "524,288",
        "vLLM",
        "524,288",
        "exact",
    ]
    assert lines[start + 2].split() == ["max", "concurrency", "plan", "256.00x", "vLLM", "256.00x", "exact"]
    assert "int8-w8a8: plan vs." not in text  # a variant without a comparison prints none
