"""End to end on one vLLM server quant-tui did not start: `bench --url`, `monitor --once --json`, the load generator, quality, a kill."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from engine.telemetry.metrics import parse_metrics
from tui.cli import main

API_KEY = "e2e-s3cret-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
REQUESTS = 12
# Long enough (about a second of load on 2 cores) that the client sees tokens arrive over time and that
# polls every 0.2 s see requests running: at 16 tokens a CPU-starved client (vLLM busy on both cores)
# found whole answers already in its socket buffer, so their TPOT was 0, and the load could finish
# between two polls.
OUTPUT_TOKENS = 64


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server(NamedTuple):
    """The module's server: its URL and the pid of its API process (the leader of its process group)."""

    url: str
    pid: int


@pytest.fixture(scope="module")
def server(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """vLLM started by hand (not by quant-tui's launcher), with an API key; the last test kills it."""
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
        yield Server(url, process.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _request_success(url: str) -> float:
    """The server's own count of finished requests, read independently of the code under test."""
    sample = parse_metrics(httpx.get(url + "/metrics", headers=AUTH, timeout=10).text)
    return sample.counters["request_success"]


@pytest.mark.e2e
def test_e2e_bench_url_counts_every_request_once(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    result_file = tmp_path / "result.json"
    before = _request_success(server.url)
    argv = ["bench", "--url", server.url, "--api-key-file", str(key_file), "--num-prompts", str(REQUESTS)]
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
    after = _request_success(server.url)
    text = result_file.read_text()
    data = json.loads(text)
    assert API_KEY not in text
    assert data["completed"] == REQUESTS and data["failed"] == 0
    # Every timed request counted once by the client and once by the server (+2 warm-ups).
    assert after - before == REQUESTS + 2
    window = data["quant_tui"]["server"]
    assert window["request_success"] == REQUESTS and window["generation_tokens"] == REQUESTS * OUTPUT_TOKENS
    assert data["total_output_tokens"] == REQUESTS * OUTPUT_TOKENS
    assert data["output_lens"] == [OUTPUT_TOKENS] * REQUESTS
    # Prompts cut to exactly --input-len tokens by the server's tokenizer (as vLLM's random dataset), plus its BOS.
    assert data["input_lens"] == [32 + 1] * REQUESTS
    for key in (
        "request_throughput",
        "output_throughput",
        "total_token_throughput",
        "max_output_tokens_per_s",
    ):
        assert data[key] > 0, key
    for key in ("mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms"):
        assert data[key] > 0, key
    # A request whose tokens were all read in one go has TPOT 0 (as in vLLM's benchmark), so the median may be 0.
    assert data["median_tpot_ms"] >= 0
    assert data["median_itl_ms"] >= 0 and data["mean_e2el_ms"] > data["mean_ttft_ms"]
    # One gap per streamed chunk after the first (as vLLM's benchmark). vLLM's API process merges the tokens of
    # a request when it falls behind its engine (RequestOutputCollector), so a chunk may carry several.
    assert all(len(gaps) <= OUTPUT_TOKENS - 1 for gaps in data["itls"])
    assert sum(len(gaps) for gaps in data["itls"]) > REQUESTS
    assert data["request_goodput"] == pytest.approx(data["request_throughput"])
    reproducibility = data["quant_tui"]["reproducibility"]
    assert reproducibility["vllm_version"] and reproducibility["model_files_sha256"]["config.json"]


@pytest.mark.e2e
def test_e2e_bench_url_refused_key_is_one_line(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--url", server.url, "--num-prompts", "1"]) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and len(err.strip().splitlines()) == 1


@pytest.mark.e2e
def test_e2e_monitor_once_json_on_a_foreign_server(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["monitor", server.url, "--once", "--json", "--interval", "0.5", "--api-key", API_KEY]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["error"] is None and record["url"] == server.url + "/metrics"
    assert record["generation_tokens_total"] is not None and record["kv_cache_capacity_tokens"]
    assert record["requests_running"] == 0


@pytest.mark.e2e
def test_e2e_server_counters_see_the_tokens_the_generator_counted(server: Server) -> None:
    from engine.bench.load_result import LoadResult
    from engine.bench.load_spec import LoadSpec
    from engine.bench.loadgen import run_load
    from engine.telemetry.poller import TelemetryPoller
    from engine.telemetry.snapshot import TelemetrySnapshot

    def saw_running() -> bool:
        return any((snapshot.metrics.requests_running or 0.0) >= 1.0 for snapshot in seen if snapshot.metrics)

    seen: list[TelemetrySnapshot] = []
    stop = threading.Event()
    results: list[LoadResult] = []
    with TelemetryPoller(server.url, api_key=API_KEY, interval_s=0.2, server_pid=server.pid) as poller:
        before = poller.poll_once()
        watcher = threading.Thread(target=poller.run, args=(seen.append, stop))
        watcher.start()
        spec = LoadSpec(concurrency=4, prompt_tokens=32, output_tokens=OUTPUT_TOKENS, requests=REQUESTS)
        # Load again (at most 5 times) until a poll has landed while requests ran: on a loaded 2-core box
        # one load of about a second can fall between two polls, and that says nothing about the counts.
        while len(results) < 5 and not (results and saw_running()):
            results.append(run_load(server.url, spec, api_key=API_KEY))
        stop.set()
        watcher.join()
        after = poller.poll_once()
    for result in results:
        assert result.outcomes["ok"] == REQUESTS, result.outcomes
        assert result.generated_tokens == REQUESTS * OUTPUT_TOKENS
        assert all(record.tokens_from_usage for record in result.records)
    assert before.metrics is not None and after.metrics is not None
    assert before.metrics.generation_tokens_total is not None
    assert after.metrics.generation_tokens_total is not None
    assert after.metrics.generation_tokens_total - before.metrics.generation_tokens_total == sum(
        result.generated_tokens for result in results
    )
    assert after.metrics.prompt_tokens_total is not None and before.metrics.prompt_tokens_total is not None
    assert after.metrics.prompt_tokens_total - before.metrics.prompt_tokens_total == sum(
        result.prompt_tokens for result in results
    )
    assert saw_running(), f"no poll saw a running request in {len(results)} loads"
    assert all(snapshot.server_rss_bytes for snapshot in seen)


@pytest.mark.e2e
def test_e2e_served_perplexity_equals_the_transformers_reference(server: Server, demo_model: Path) -> None:
    """vLLM's prompt log-probs through measure_quality against the same model run by transformers (float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.bench.heldout_text import heldout_samples
    from engine.bench.quality import measure_quality
    from engine.model.demo import demo_corpus_path

    texts = heldout_samples(demo_corpus_path("heldout"), samples=3)
    result = measure_quality(server.url, str(demo_model), texts, api_key=API_KEY)
    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    model = AutoModelForCausalLM.from_pretrained(demo_model, dtype=torch.float32).eval()
    total_logprob, positions, same_top1 = 0.0, 0, 0
    for text, score in zip(texts, result.texts, strict=True):
        ids = tokenizer(text, return_tensors="pt").input_ids
        assert tuple(ids[0, 1:].tolist()) == score.tokens  # vLLM scored the tokens transformers makes
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
        total_logprob += logprobs.gather(1, ids[0, 1:, None]).sum().item()
        positions += ids.shape[1] - 1
        same_top1 += sum(int(a) == b for a, b in zip(logprobs.argmax(-1).tolist(), score.top1, strict=True))
    assert result.positions == positions
    # vLLM serves the bf16 weights in bf16; the reference runs them in float32.
    assert result.perplexity == pytest.approx(math.exp(-total_logprob / positions), rel=0.03)
    assert same_top1 / positions >= 0.95


@pytest.mark.e2e
def test_e2e_quality_text_too_long_is_one_line(server: Server, demo_model: Path) -> None:
    """A text longer than the max model length (1024): the server's refusal comes back as one line."""
    from engine.bench.quality import measure_quality
    from engine.errors import QuantTuiError

    with pytest.raises(QuantTuiError, match="refused to score a text") as caught:
        measure_quality(server.url, str(demo_model), [" ".join(["word"] * 3000)], api_key=API_KEY)
    assert "\n" not in str(caught.value)


@pytest.mark.e2e
def test_e2e_bench_url_eval_task_runs_lm_eval_against_the_server(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real lm-eval (local-completions, offline, the served folder's tokenizer) on the shipped task."""
    pytest.importorskip("lm_eval", reason="the 'eval' extra is not installed")
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    result_file = tmp_path / "result.json"
    before = _request_success(server.url)
    argv = ["bench", "--url", server.url, "--api-key-file", str(key_file), "--num-prompts", "4"]
    argv += ["--output-len", "8", "--eval-task", "quant_tui_demo_fluency", "--eval-limit", "10"]
    argv += ["--save-result", str(result_file)]
    assert main(argv) == 0, capsys.readouterr().err
    assert "quant_tui_demo_fluency (10 documents):" in capsys.readouterr().out
    text = result_file.read_text()
    assert API_KEY not in text
    accuracy = json.loads(text)["quant_tui"]["task_accuracy"]
    assert accuracy["task"] == "quant_tui_demo_fluency" and accuracy["metric"] == "acc,none"
    assert accuracy["samples"] == 10 and accuracy["limit"] == 10 and accuracy["lm_eval_version"] == "0.4.13"
    assert round(accuracy["value"] * 10, 6).is_integer() and accuracy["stderr"] is not None
    # The load's 4 requests, then one log-likelihood request per choice: 10 documents × 4 choices.
    assert _request_success(server.url) - before == 4 + 10 * 4


# Last in the module: it kills the module's server.
@pytest.mark.e2e
def test_e2e_server_killed_mid_load_every_request_accounted_for(server: Server) -> None:
    from engine.bench.load_result import LoadProgress
    from engine.bench.load_spec import LoadSpec
    from engine.bench.loadgen import run_load
    from engine.bench.metrics import Outcome

    requests = 40
    spec = LoadSpec(concurrency=4, prompt_tokens=32, output_tokens=200, requests=requests, timeout_s=60)
    finished: list[LoadProgress] = []

    def kill_after_first_requests(progress: LoadProgress) -> None:
        finished.append(progress)
        if progress.finished == 2:
            os.killpg(server.pid, signal.SIGKILL)

    result = run_load(server.url, spec, api_key=API_KEY, on_progress=kill_after_first_requests)
    # Every request it sent, or meant to send, is counted once: completed + failed == sent.
    assert len(result.records) == requests
    assert result.ok_requests + result.failed_requests == requests
    assert result.outcomes["ok"] >= 2
    assert result.outcomes["connection_error"] >= 1
    assert sorted(record.index for record in result.records) == list(range(requests))
    assert all(record.error for record in result.records if record.outcome is not Outcome.OK)
    summary = result.serve_summary()
    assert summary.completed + summary.failed == requests
    assert summary.failure_reasons and all("\n" not in reason for reason, _ in summary.failure_reasons)
