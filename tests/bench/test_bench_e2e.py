"""End to end: `quant-tui bench --url` and `quant-tui monitor --once --json` against a vLLM server quant-tui did not start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.telemetry.metrics import parse_metrics
from tui.cli import main

API_KEY = "e2e-s3cret-key"
REQUESTS = 12
OUTPUT_TOKENS = 16


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def foreign_server(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """vLLM started by hand (not by quant-tui's launcher), with an API key; yields its URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("foreign-vllm") / "server.log"
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(demo_model)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--max-model-len", "1024"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_API_KEY": API_KEY, "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                pytest.fail(f"vLLM exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM not healthy after 300 s: {log.read_text()[-2000:]}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _request_success(url: str) -> float:
    """The server's own count of finished requests, read independently of the code under test."""
    sample = parse_metrics(httpx.get(url + "/metrics", timeout=10).text)
    return sample.counters["request_success"]


@pytest.mark.e2e
def test_e2e_bench_url_counts_every_request_once(
    foreign_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    result_file = tmp_path / "result.json"
    before = _request_success(foreign_server)
    argv = ["bench", "--url", foreign_server, "--api-key-file", str(key_file), "--num-prompts", str(REQUESTS)]
    argv += [
        "--concurrency",
        "4",
        "--input-len",
        "32",
        "--output-len",
        str(OUTPUT_TOKENS),
        "--num-warmups",
        "2",
    ]
    argv += ["--slo", "ttft:5000,tpot:1000", "--save-result", str(result_file), "--save-detailed"]
    assert main(argv) == 0, capsys.readouterr().err
    after = _request_success(foreign_server)
    text = result_file.read_text()
    data = json.loads(text)
    assert API_KEY not in text
    assert data["completed"] == REQUESTS and data["failed"] == 0
    # Every timed request counted once by the client and once by the server (+2 warm-ups).
    assert after - before == REQUESTS + 2
    server = data["quant_tui"]["server"]
    assert server["request_success"] == REQUESTS and server["generation_tokens"] == REQUESTS * OUTPUT_TOKENS
    assert data["total_output_tokens"] == REQUESTS * OUTPUT_TOKENS
    assert data["output_lens"] == [OUTPUT_TOKENS] * REQUESTS
    for key in (
        "request_throughput",
        "output_throughput",
        "total_token_throughput",
        "max_output_tokens_per_s",
    ):
        assert data[key] > 0, key
    for key in ("mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms"):
        assert data[key] > 0, key
    assert data["median_itl_ms"] >= 0 and data["median_e2el_ms"] > data["median_ttft_ms"]
    assert all(len(gaps) == OUTPUT_TOKENS - 1 for gaps in data["itls"])  # one streamed chunk per token
    assert data["request_goodput"] == pytest.approx(data["request_throughput"])
    reproducibility = data["quant_tui"]["reproducibility"]
    assert reproducibility["vllm_version"] and reproducibility["model_files_sha256"]["config.json"]


@pytest.mark.e2e
def test_e2e_bench_url_refused_key_is_one_line(
    foreign_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--url", foreign_server, "--num-prompts", "1"]) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and len(err.strip().splitlines()) == 1


@pytest.mark.e2e
def test_e2e_monitor_once_json_on_a_foreign_server(
    foreign_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["monitor", foreign_server, "--once", "--json", "--interval", "0.5", "--api-key", API_KEY]) == 0
    )
    record = json.loads(capsys.readouterr().out)
    assert record["error"] is None and record["url"] == foreign_server + "/metrics"
    assert record["generation_tokens_total"] is not None and record["kv_cache_capacity_tokens"]
    assert record["requests_running"] == 0


@pytest.mark.e2e
def test_e2e_ab_sweep_bf16_against_int8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "--model", "demo", "--methods", "bf16,int8-w8a8", "--sweep", "--sweep-max", "2"]
    argv += ["--num-prompts", "4", "--input-len", "16", "--output-len", "8", "--no-quality"]
    argv += ["--work-dir", str(tmp_path), "--slo", "ttft:60000,tpot:60000", "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads(capsys.readouterr().out)
    for variant in data["variants"]:
        assert variant["error"] is None, variant["error"]
        sweep = variant["sweep"]
        assert [point["max_concurrency"] for point in sweep["curve"]] == [1, 2]
        assert sweep["knee_concurrency"] == 2
        for point in sweep["points"]:
            assert point["completed"] == 4 and point["quant_tui"]["server"]["request_success"] == 4
            assert point["quant_tui"]["reproducibility"]["server_argv"]
    assert data["capacity"].endswith("holds 2 concurrent users (the most tried)")
    assert "bf16" in data["capacity"] and "int8-w8a8" in data["capacity"]
    assert "output tokens/s vs concurrency" in data["plots"]
