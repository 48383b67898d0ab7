"""Tests for engine.bench.loadgen against a tiny local OpenAI-style streaming server (faults it can play on cue)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.bench.load_result import LoadProgress
from engine.bench.load_spec import LoadError, LoadSpec, make_prompt, read_prompt_file
from engine.bench.loadgen import api_base_url, run_load, served_model_name, timed_prompts
from engine.bench.metrics import Outcome
from engine.errors import QuantTuiError
from tests.bench.local_server import QuietHandler, local_server


@dataclass
class FakeCompletions:
    """How the fake server answers; ``modes`` is cycled over requests in arrival order."""

    modes: list[str] = field(default_factory=lambda: ["ok"])
    token_delay_s: float = 0.002
    bodies: list[dict[str, object]] = field(default_factory=list)
    headers: list[str | None] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # A toy /tokenize and /detokenize (vLLM's): every word a token per 4 characters, leading space included.
    tokenizer: bool = True
    vocabulary: list[str] = field(default_factory=list)
    tokenizer_calls: int = 0

    def tokenize(self, text: str) -> list[int]:
        pieces = [word[i : i + 4] for word in re.findall(r" ?\S+", text) for i in range(0, len(word), 4)]
        with self.lock:
            for piece in pieces:
                if piece not in self.vocabulary:
                    self.vocabulary.append(piece)
            return [self.vocabulary.index(piece) for piece in pieces]

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(self.vocabulary[token] for token in tokens)

    def mode(self) -> str:
        with self.lock:
            return self.modes[(len(self.bodies) - 1) % len(self.modes)]


@pytest.fixture
def fake() -> Iterator[tuple[FakeCompletions, str]]:
    """A local server answering /v1/models and streamed /v1/completions; yields its state and URL."""
    state = FakeCompletions()

    class Handler(QuietHandler):
        def send_sse(self, *payloads: str) -> None:
            for payload in payloads:
                self.wfile.write(f"data: {payload}\n\n".encode())
                self.wfile.flush()
                time.sleep(state.token_delay_s)

        def do_GET(self) -> None:
            self.send_body(
                json.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model"}]}).encode()
            )

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path in ("/tokenize", "/detokenize"):
                state.tokenizer_calls += 1
                if not state.tokenizer:
                    self.send_body(b'{"detail": "Not Found"}', status=404)
                elif self.path == "/tokenize":
                    assert request["add_special_tokens"] is False
                    tokens = state.tokenize(request["prompt"])
                    self.send_body(json.dumps({"count": len(tokens), "tokens": tokens}).encode())
                else:
                    self.send_body(json.dumps({"prompt": state.detokenize(request["tokens"])}).encode())
                return
            with state.lock:
                state.bodies.append(request)
                state.headers.append(self.headers.get("Authorization"))
                state.in_flight += 1
                state.most_in_flight = max(state.most_in_flight, state.in_flight)
            try:
                self.answer(request, state.mode())
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with state.lock:
                    state.in_flight -= 1

        def answer(self, request: dict[str, object], mode: str) -> None:
            if mode == "http_400":
                body = b'{"error": {"message": "This model\'s maximum context length is 512 tokens."}}'
                self.send_response(400)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            max_tokens = int(request["max_tokens"])  # type: ignore[call-overload]
            tokens = [json.dumps({"choices": [{"index": 0, "text": f" t{i}"}]}) for i in range(max_tokens)]
            usage = json.dumps(
                {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": max_tokens}}
            )
            if mode == "ok":
                self.send_sse(*tokens, usage, "[DONE]")
            elif mode == "no_done":
                self.send_sse(*tokens[:2])  # the connection closes: a server that died mid-stream
            elif mode == "garbage":
                self.send_sse(tokens[0], "{not json")
            elif mode == "stream_error":
                self.send_sse(tokens[0], json.dumps({"error": {"message": "engine dead", "code": 500}}))
            elif mode == "slow":
                self.send_sse(tokens[0])
                time.sleep(3)
                self.send_sse(*tokens[1:], usage, "[DONE]")

    with local_server(Handler) as url:
        yield state, url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000"),
        ("127.0.0.1:8000/metrics", "http://127.0.0.1:8000"),
        ("https://box.example/vllm/v1", "https://box.example/vllm"),
    ],
)
def test_api_base_url(given: str, expected: str) -> None:
    assert api_base_url(given) == expected


@pytest.mark.parametrize(
    "spec",
    [
        LoadSpec(concurrency=0),
        LoadSpec(prompt_tokens=0),
        LoadSpec(output_tokens=0),
        LoadSpec(requests=None, duration_s=None),
        LoadSpec(requests=0),
        LoadSpec(requests=None, duration_s=-1.0),
        LoadSpec(timeout_s=0.0),
    ],
)
def test_bad_specs_are_one_line_errors(spec: LoadSpec) -> None:
    with pytest.raises(LoadError) as caught:
        run_load("http://127.0.0.1:1", spec)
    assert isinstance(caught.value, QuantTuiError) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("tokens", "index"), [(1, 0), (64, 3), (500, 9)])
def test_prompts_have_the_asked_word_count_and_differ(tokens: int, index: int) -> None:
    prompt = make_prompt(tokens, index)
    assert len(prompt.split()) == tokens
    assert prompt == make_prompt(tokens, index)
    if tokens > 8:
        assert prompt != make_prompt(tokens, index + 1)


def test_ok_load_counts_tokens_and_sends_the_right_request(fake: tuple[FakeCompletions, str]) -> None:
    state, url = fake
    progress: list[LoadProgress] = []
    spec = LoadSpec(concurrency=3, prompt_tokens=10, output_tokens=12, requests=9)
    result = run_load(url + "/v1", spec, api_key="k1", on_progress=progress.append)
    assert result.model == "fake-model"
    assert result.outcomes["ok"] == 9 and result.failed_requests == 0
    assert result.generated_tokens == 9 * 12 and result.prompt_tokens == 9 * 7
    assert all(record.tokens_from_usage for record in result.records)
    assert [record.index for record in result.records] == list(range(9))
    assert state.most_in_flight <= 3
    body = state.bodies[0]
    assert body["max_tokens"] == 12 and body["ignore_eos"] is True and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "fake-model"
    assert set(state.headers) == {"Bearer k1"}
    assert [item.finished for item in progress] == list(range(1, 10))
    assert progress[-1].generated_tokens == 108
    summary = result.summary()
    assert summary["median_ttft_ms"] > 0 and summary["median_tpot_ms"] > 0 and summary["median_itl_ms"] > 0
    assert summary["p95_e2el_ms"] >= summary["median_e2el_ms"]
    assert summary["completed"] == 9 and summary["failed"] == 0 and summary["total_output_tokens"] == 108
    assert result.output_tokens_per_s == pytest.approx(108 / result.duration_s)
    assert "temperature" not in body  # as vLLM: the server's default sampling applies
    # Every prompt cut to exactly 10 tokens by the server's tokenizer, as vLLM's random dataset does.
    assert [len(state.tokenize(str(item["prompt"]))) for item in state.bodies] == [10] * 9
    # 12 messages with choices per request: 11 gaps each, pooled into ITL.
    assert all(len(record.itl_s) == 11 for record in result.records)
    assert json.loads(json.dumps(result.to_dict()))["outcomes"]["ok"] == 9


@pytest.mark.parametrize(
    ("modes", "expected"),
    [
        (["ok", "http_400"], {"ok": 3, "http_error": 3}),
        (["no_done"], {"connection_error": 6}),
        (["garbage", "ok", "ok"], {"bad_response": 2, "ok": 4}),
        (["stream_error"], {"http_error": 6}),
    ],
)
def test_every_failure_is_counted(
    fake: tuple[FakeCompletions, str], modes: list[str], expected: dict[str, int]
) -> None:
    state, url = fake
    state.modes = modes
    result = run_load(url, LoadSpec(concurrency=2, output_tokens=5, requests=6, model="fake-model"))
    assert len(result.records) == 6
    assert {name: count for name, count in result.outcomes.items() if count} == expected
    for record in result.records:
        assert (record.error is None) == (record.outcome is Outcome.OK)
        assert record.error is None or "\n" not in record.error
    http_errors = [record for record in result.records if record.status_code == 400]
    assert all("maximum context length" in (record.error or "") for record in http_errors)


def test_timeout_is_counted(fake: tuple[FakeCompletions, str]) -> None:
    state, url = fake
    state.modes = ["slow"]
    # The fake sends its first token at once and the rest after 3 s; the timeout falls in between
    # (wide margins: the suite runs on busy 2-core machines).
    result = run_load(url, LoadSpec(concurrency=2, output_tokens=3, requests=2, timeout_s=1.5, model="m"))
    assert result.outcomes["timeout"] == 2
    assert all(record.ttft_s is not None and record.latency_s < 2.9 for record in result.records)


def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_load(url, LoadSpec(concurrency=2, requests=4, model="m"))
    assert result.outcomes["connection_error"] == 4
    with pytest.raises(LoadError, match="cannot reach"):
        served_model_name(url)


def test_stop_event_cancels_in_flight_and_counts_them(fake: tuple[FakeCompletions, str]) -> None:
    state, url = fake
    state.modes = ["slow"]
    stop = threading.Event()

    def stop_once_three_are_in_flight() -> None:
        # The server holds each answer 3 s after its first token: stop while all three wait.
        deadline = time.monotonic() + 30
        while state.in_flight < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()

    threading.Thread(target=stop_once_three_are_in_flight, daemon=True).start()
    result = run_load(url, LoadSpec(concurrency=3, output_tokens=3, requests=50, model="m"), stop_event=stop)
    assert result.stopped
    assert result.outcomes["cancelled"] == 3 and len(result.records) == 3
    # Cancelled, not waited for: no request ran to its 3 s end.
    assert all(record.latency_s < 2.9 for record in result.records)


def test_duration_bound_load(fake: tuple[FakeCompletions, str]) -> None:
    state, url = fake
    state.token_delay_s = 0.01
    result = run_load(url, LoadSpec(concurrency=2, output_tokens=4, requests=None, duration_s=0.4, model="m"))
    assert result.ok_requests >= 4 and result.failed_requests == 0
    assert all(record.started_s < 0.4 for record in result.records)
    assert not result.stopped


@pytest.mark.parametrize(
    ("tokenizer", "spec", "expected_lengths"),
    [
        # Word prompts are longer in tokens than in words here (4 characters a token); fitted, they are exact.
        (
            True,
            LoadSpec(concurrency=2, prompt_tokens=16, output_tokens=2, requests=3, model="m"),
            [16, 16, 16],
        ),
        (True, LoadSpec(concurrency=2, prompt_tokens=1, output_tokens=2, requests=2, model="m"), [1, 1]),
        (
            True,
            LoadSpec(
                concurrency=2,
                prompt_tokens=20,
                prompt_range=0.5,
                output_tokens=2,
                requests=4,
                seed=3,
                model="m",
            ),
            None,  # each its own drawn length
        ),
    ],
)
def test_prompts_are_fitted_to_the_exact_token_count(
    fake: tuple[FakeCompletions, str], tokenizer: bool, spec: LoadSpec, expected_lengths: list[int] | None
) -> None:
    from engine.bench.load_spec import length_for

    state, url = fake
    state.tokenizer = tokenizer
    result = run_load(url, spec)
    assert result.outcomes["ok"] == spec.requests
    lengths = [len(state.tokenize(str(body["prompt"]))) for body in state.bodies]
    expected = expected_lengths or [
        length_for(spec.prompt_tokens, spec.prompt_range, index, spec.seed, 1)
        for index in range(len(lengths))
    ]
    assert sorted(lengths) == sorted(expected)


def test_a_server_without_a_tokenizer_gets_the_word_prompts(fake: tuple[FakeCompletions, str]) -> None:
    state, url = fake
    state.tokenizer = False
    result = run_load(url, LoadSpec(concurrency=2, prompt_tokens=12, output_tokens=2, requests=3, model="m"))
    assert result.outcomes["ok"] == 3 and state.tokenizer_calls >= 1
    assert sorted(str(body["prompt"]) for body in state.bodies) == sorted(
        make_prompt(12, i) for i in range(3)
    )


@pytest.mark.parametrize("tokenizer", [True, False])
def test_timed_prompts_are_the_prompts_the_load_sends(
    fake: tuple[FakeCompletions, str], tokenizer: bool
) -> None:
    state, url = fake
    state.tokenizer = tokenizer
    spec = LoadSpec(concurrency=2, prompt_tokens=12, output_tokens=2, requests=4, num_warmups=1, model="m")
    prompts = timed_prompts(url, spec)
    state.bodies.clear()
    run_load(url, spec)
    timed_bodies = state.bodies[spec.num_warmups :]
    assert sorted(prompts) == sorted(str(body["prompt"]) for body in timed_bodies)
    assert len(set(prompts)) == 4
    if tokenizer:
        assert [len(state.tokenize(prompt)) for prompt in prompts] == [12] * 4


def test_timed_prompts_need_a_request_count(fake: tuple[FakeCompletions, str]) -> None:
    _, url = fake
    with pytest.raises(LoadError, match="number of requests"):
        timed_prompts(url, LoadSpec(requests=None, duration_s=1.0, model="m"))


def test_a_dataset_s_prompts_are_sent_in_order_and_again_from_the_first(
    fake: tuple[FakeCompletions, str], tmp_path: Path
) -> None:
    state, url = fake
    dataset = tmp_path / "prompts.jsonl"
    dataset.write_text(
        '{"prompt": "first one", "output_tokens": 9}\n\n{"prompt": "second"}\n', encoding="utf-8"
    )
    prompts = read_prompt_file(dataset)
    assert prompts == ("first one", "second")
    spec = LoadSpec(concurrency=1, output_tokens=2, requests=3, model="m", prompts=prompts)
    assert timed_prompts(url, spec) == ["first one", "second", "first one"]
    state.tokenizer_calls = 0
    result = run_load(url, spec)
    assert result.outcomes["ok"] == 3 and state.tokenizer_calls == 0  # sent as written, never cut
    assert [body["prompt"] for body in state.bodies] == ["first one", "second", "first one"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot read the dataset"),
        ("", "has no prompt"),
        ("\n  \n", "has no prompt"),
        ('{"prompt": "ok"}\nnot json\n', "line 2 of the dataset"),
        ('{"text": "no prompt field"}\n', "line 1 of the dataset"),
        ('{"prompt": 5}\n', "line 1 of the dataset"),
        ('["prompt"]\n', "line 1 of the dataset"),
    ],
)
def test_a_bad_dataset_is_a_one_line_error(tmp_path: Path, text: str | None, message: str) -> None:
    dataset = tmp_path / "prompts.jsonl"
    if text is not None:
        dataset.write_text(text, encoding="utf-8")
    with pytest.raises(LoadError, match=message) as caught:
        read_prompt_file(dataset)
    assert len(str(caught.value).splitlines()) == 1
