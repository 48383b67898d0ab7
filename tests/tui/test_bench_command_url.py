"""Tests for `quant-tui bench --url` against the fake streaming server: vLLM result keys, key redaction, append, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.hardware.nvml import NVML_OK, NvmlLibrary
from tests.bench.test_loadgen import FakeCompletions, fake  # noqa: F401 (the fixture)
from tui.cli import main

# The keys `vllm bench serve --save-result` writes for the figures quant-tui shares with it (vLLM 0.32).
VLLM_KEYS = (
    "date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts", "request_rate",
    "burstiness", "max_concurrency", "duration", "completed", "failed", "total_input_tokens",
    "total_output_tokens", "request_throughput", "request_goodput", "output_throughput",
    "total_token_throughput", "latencies", "queue_times", "max_output_tokens_per_s", "max_concurrent_requests",
    "mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms",
    "std_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "median_itl_ms", "std_itl_ms", "p99_itl_ms",
    "mean_e2el_ms", "median_e2el_ms", "p99_e2el_ms",
)  # fmt: skip


def test_bench_url_saves_vllm_keys_and_never_the_key(
    fake: tuple[FakeCompletions, str],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state, url = fake
    monkeypatch.setenv("QUANT_TUI_API_KEY", "s3cret-key")
    result_file = tmp_path / "out" / "result.json"
    argv = ["bench", "--url", url + "/v1", "--num-prompts", "6", "--concurrency", "2", "--output-len", "5"]
    argv += ["--slo", "ttft:5000,tpot:1000", "--save-result", str(result_file)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Successful requests:" in out and "Median TPOT (ms):" in out
    data = json.loads(result_file.read_text())
    assert [key for key in VLLM_KEYS if key not in data] == []
    assert data["completed"] == 6 and data["failed"] == 0 and data["total_output_tokens"] == 30
    assert data["request_rate"] == "inf" and data["max_concurrency"] == 2 and data["model_id"] == "fake-model"
    assert data["request_goodput"] == pytest.approx(6 / data["duration"])
    assert data["quant_tui"]["reproducibility"]["load"]["seed"] == 0
    energy = data["quant_tui"]["energy"]
    if NvmlLibrary().status() != NVML_OK:  # CPU-only host: said, not guessed
        assert energy["joules"] is None and energy["not_available"].startswith("not available: ")
    assert set(state.headers) == {"Bearer s3cret-key"}
    assert "s3cret-key" not in result_file.read_text()
    # --append-result adds one JSON line, as vLLM does.
    assert main([*argv, "--append-result", "--num-prompts", "2"]) == 0
    lines = result_file.read_text().split("\n")
    assert len(lines) == 2 and json.loads(lines[1])["completed"] == 2


def test_bench_url_json_on_stdout_with_warmups_left_out(
    fake: tuple[FakeCompletions, str],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    state, url = fake
    argv = ["bench", "--url", url, "--num-prompts", "4", "--num-warmups", "3", "--output-len", "3", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["completed"] == 4 and data["num_prompts"] == 4
    assert data["quant_tui"]["warmup_outcomes"] == {"ok": 3}
    assert len(state.bodies) == 7


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--append-result"], "--save-result"),
        (["--slo", "itl:5"], "SLO"),
        (["--percentiles", "50,101"], "percentiles"),
        (["--request-rate", "0"], "request rate"),
        (["--api-key-file", "/no/such/key"], "API key file"),
        (["--dataset", "/no/such/prompts.jsonl"], "cannot read the dataset"),
    ],
)
def test_bench_url_bad_input(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--url", "http://127.0.0.1:1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("quant-tui: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_bench_url_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--url", "http://127.0.0.1:1"]) == 2
    assert "cannot reach" in capsys.readouterr().err
