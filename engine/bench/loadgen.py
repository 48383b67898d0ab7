"""An async load generator for an OpenAI-compatible server, measuring as ``vllm bench serve`` does; every outcome counted."""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from engine.bench.arrivals import arrival_offsets
from engine.bench.metrics import DEFAULT_PERCENTILES, Outcome, RequestRecord, ServeSummary, summarize
from engine.errors import QuantTuiError
from engine.serve import client as server_client

__all__ = [
    "LoadError",
    "LoadProgress",
    "LoadResult",
    "LoadSpec",
    "Outcome",
    "RequestRecord",
    "api_base_url",
    "generate_load",
    "length_for",
    "make_prompt",
    "run_load",
    "served_model_name",
]

# Short common words (split at use); with any English-trained BPE most of them are one token each, so a prompt of N
# words is about N tokens. The server's own count comes back in the usage chunk.
_PROMPT_WORDS = (
    "the of and to in is was for on that with as by at from his her it an were are which this be "
    "or has had not but one all their they new more first two after who time year also been other "
    "people city over can into some would only its most world made may such later than many "
    "where during state school part when water music small house light river early north south"
)
_HTTP_ERROR_EXCERPT_CHARS = 160
_STOP_CHECK_S = 0.05


class LoadError(QuantTuiError):
    """The load cannot be run as asked (bad settings, or no server to send it to)."""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What load to send.

    Attributes:
        concurrency: Most requests in flight at once (vLLM ``--max-concurrency``).
        prompt_tokens: Prompt length, in tokens (approximate: built from common words).
        output_tokens: ``max_tokens`` of each request; with ``ignore_eos`` every request generates exactly this many.
        requests: How many requests to send in all (``None``: until ``duration_s``).
        duration_s: Stop releasing requests after this many seconds (``None``: until ``requests``).
        model: The served model name; ``None`` asks the server's ``/v1/models``.
        timeout_s: Give up on one request after this many seconds in all.
        ignore_eos: Ask vLLM to ignore the end-of-sequence token so output lengths are exact.
        seed: Seed for prompts, lengths and arrivals, so the same spec sends the same load.
        request_rate: Mean requests per second of the arrival process; ``inf`` releases all at once
            and the concurrency alone paces them (a closed loop).
        burstiness: Gamma shape of the arrival gaps (1: Poisson), as vLLM's ``--burstiness``.
        prompt_range: Prompt lengths are drawn uniformly from ``prompt_tokens * (1 ± prompt_range)``.
        output_range: The same for output lengths (vLLM ``--random-range-ratio``).
        num_warmups: Requests sent before the timed run, left out of every figure.
        temperature: Sampling temperature sent; ``None`` sends none, so the server's default applies (as vLLM).
    """

    concurrency: int = 4
    prompt_tokens: int = 64
    output_tokens: int = 64
    requests: int | None = 32
    duration_s: float | None = None
    model: str | None = None
    timeout_s: float = 120.0
    ignore_eos: bool = True
    seed: int = 0
    request_rate: float = math.inf
    burstiness: float = 1.0
    prompt_range: float = 0.0
    output_range: float = 0.0
    num_warmups: int = 0
    temperature: float | None = None

    def check(self) -> None:
        """Raises :class:`LoadError` with a one-line reason when the settings cannot work."""
        if self.concurrency < 1:
            raise LoadError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.prompt_tokens < 1 or self.output_tokens < 1:
            raise LoadError("prompt and output lengths must be at least 1 token")
        if self.requests is None and self.duration_s is None:
            raise LoadError("give a number of requests or a duration for the load")
        if self.requests is not None and self.requests < 1:
            raise LoadError(f"the number of requests must be at least 1, not {self.requests}")
        if self.duration_s is not None and not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise LoadError(f"the duration must be a positive number of seconds, not {self.duration_s}")
        if not self.timeout_s > 0:
            raise LoadError(f"the request timeout must be positive, not {self.timeout_s}")
        if not self.request_rate > 0:
            raise LoadError(f"the request rate must be positive (or inf), not {self.request_rate}")
        if not self.burstiness > 0:
            raise LoadError(f"burstiness must be positive, not {self.burstiness}")
        for name, ratio in (("prompt", self.prompt_range), ("output", self.output_range)):
            if not 0.0 <= ratio < 1.0:
                raise LoadError(f"the {name} length range must be in [0, 1), not {ratio}")
        if self.num_warmups < 0:
            raise LoadError(f"the number of warm-up requests cannot be negative, not {self.num_warmups}")
        if self.temperature is not None and not self.temperature >= 0:
            raise LoadError(f"the temperature must be 0 or more, not {self.temperature}")


@dataclass(frozen=True, slots=True)
class LoadProgress:
    """Progress after each finished request.

    Attributes:
        finished: Requests finished so far (any outcome).
        total: Requests planned, or ``None`` for a duration-bound load.
        ok: Requests that completed.
        failed: Requests that did not.
        generated_tokens: Tokens generated so far.
        elapsed_s: Seconds since the load started.
    """

    finished: int
    total: int | None
    ok: int
    failed: int
    generated_tokens: int
    elapsed_s: float


@dataclass(frozen=True)
class LoadResult:
    """Everything a load run measured; ``records`` holds every timed request released, whatever its outcome.

    Attributes:
        spec: The load that was asked for.
        model: The model name the requests used.
        duration_s: Seconds from the first dispatch to the end of the last request (vLLM ``duration``).
        records: One record per timed request, in release order (warm-ups are not in it).
        stopped: Whether the stop event ended the load early.
        warmup_outcomes: Outcomes of the warm-up requests.
    """

    spec: LoadSpec
    model: str
    duration_s: float
    records: tuple[RequestRecord, ...]
    stopped: bool = False
    warmup_outcomes: Mapping[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        counts = Counter(record.outcome.value for record in self.records)
        object.__setattr__(
            self, "outcomes", {outcome.value: counts.get(outcome.value, 0) for outcome in Outcome}
        )

    @property
    def ok_requests(self) -> int:
        """Requests that completed."""
        return self.outcomes[Outcome.OK.value]

    @property
    def failed_requests(self) -> int:
        """Requests that did not complete, for any reason."""
        return len(self.records) - self.ok_requests

    @property
    def generated_tokens(self) -> int:
        """Tokens generated over all requests (partial streams of failed ones included)."""
        return sum(record.generated_tokens for record in self.records)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens the server reported over all requests."""
        return sum(record.prompt_tokens or 0 for record in self.records)

    @property
    def output_tokens_per_s(self) -> float | None:
        """Output tokens of completed requests per second of wall time (vLLM ``output_throughput``)."""
        return self.serve_summary().output_throughput

    def serve_summary(
        self, percentiles: Sequence[float] = DEFAULT_PERCENTILES, slo_ms: Mapping[str, float] | None = None
    ) -> ServeSummary:
        """The figures of ``vllm bench serve``, from these records."""
        return summarize(self.records, self.duration_s, percentiles, slo_ms)

    def summary(self, slo_ms: Mapping[str, float] | None = None) -> dict[str, Any]:
        """The headline figures under vLLM's result keys, plus the outcomes (no per-request records)."""
        data = {
            "model_id": self.model,
            "max_concurrency": self.spec.concurrency,
            "request_rate": self.spec.request_rate,
            "num_prompts": len(self.records),
            **self.serve_summary(slo_ms=slo_ms).to_vllm_json(),
        }
        data["outcomes"] = dict(self.outcomes)
        data["stopped"] = self.stopped
        return data

    def detailed(self) -> dict[str, list[Any]]:
        """vLLM's ``--save-detailed`` lists (seconds), one entry per request in release order."""
        return {
            "input_lens": [record.prompt_tokens for record in self.records],
            "output_lens": [record.generated_tokens if record.ok else 0 for record in self.records],
            "ttfts": [record.ttft_s for record in self.records],
            "itls": [list(record.itl_s) for record in self.records],
            "latencies": [record.e2el_s for record in self.records],
            "start_times": [record.started_s for record in self.records],
            "queue_times": [record.queue_s for record in self.records],
            "errors": [record.error or "" for record in self.records],
        }

    def to_dict(self) -> dict[str, Any]:
        """The summary plus the spec and every request record."""
        data = self.summary()
        data["spec"] = asdict(self.spec)
        data["records"] = [{**asdict(record), "outcome": record.outcome.value} for record in self.records]
        return data


def api_base_url(url: str) -> str:
    """The server's root URL (no trailing ``/``, no ``/v1``) from whatever form the user typed.

    Raises:
        LoadError: The URL is empty or not http(s).
    """
    try:
        return server_client.base_url(url)
    except server_client.ServerClientError as error:
        raise LoadError(str(error)) from error


def served_model_name(base_url: str, api_key: str | None = None, timeout_s: float = 10.0) -> str:
    """The first model the server lists at ``/v1/models``.

    Raises:
        LoadError: The server cannot be reached or lists no model.
    """
    try:
        return server_client.served_model_name(base_url, api_key, timeout_s)
    except server_client.ServerClientError as error:
        raise LoadError(str(error)) from error


def make_prompt(prompt_tokens: int, index: int, seed: int = 0) -> str:
    """A prompt of about ``prompt_tokens`` tokens, different for every request index.

    Args:
        prompt_tokens: Approximate length in tokens (one common word each).
        index: The request's index; prompts differ so the prefix cache does not flatter the numbers.
        seed: Seed of the word choice.
    """
    chooser = random.Random(seed * 1_000_003 + index)
    words = _PROMPT_WORDS.split()
    return " ".join(chooser.choice(words) for _ in range(prompt_tokens))


def length_for(length: int, range_ratio: float, index: int, seed: int, salt: int) -> int:
    """One request's length, uniform over vLLM's ``[floor(L(1-r)), ceil(L(1+r))]`` (at least 1)."""
    if range_ratio <= 0:
        return length
    low = max(1, math.floor(length * (1 - range_ratio)))
    high = max(low, math.ceil(length * (1 + range_ratio)))
    return random.Random((seed * 1_000_003 + index) * 4 + salt).randint(low, high)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:_HTTP_ERROR_EXCERPT_CHARS]


class _StreamState:
    """What has arrived on one stream so far, stamped as vLLM's request function stamps it."""

    def __init__(self) -> None:
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.first_text_at: float | None = None
        self.gaps: list[float] = []
        self.chunks = 0
        self.usage: dict[str, Any] | None = None
        self.status: int | None = None
        self.done = False

    def on_data(self, payload: str, now: float) -> str | None:
        """Reads one SSE ``data:`` payload; returns an error line if the server sent one."""
        if payload == "[DONE]":
            self.done = True
            return None
        message = json.loads(payload)
        if not isinstance(message, dict):
            raise ValueError("stream chunk is not a JSON object")
        if "error" in message:
            error = message["error"]
            detail = error.get("message", error) if isinstance(error, dict) else error
            return _one_line(str(detail))
        if isinstance(message.get("usage"), dict):
            self.usage = message["usage"]
        choices = message.get("choices")
        if choices:
            # Any message with choices is a token, even with empty text (special tokens), as in vLLM.
            if self.first_token_at is None:
                self.first_token_at = now
            else:
                self.gaps.append(now - (self.last_token_at or now))
            self.last_token_at = now
            self.chunks += 1
            if self.first_text_at is None and any(choice.get("text") for choice in choices):
                self.first_text_at = now
        return None


class _LoadRun:
    """One run of :func:`generate_load`: the dispatcher, the requests in flight and their records."""

    def __init__(
        self,
        base_url: str,
        spec: LoadSpec,
        model: str,
        api_key: str | None,
        on_progress: Callable[[LoadProgress], None] | None,
    ) -> None:
        self.completions_url = base_url + "/v1/completions"
        self.spec = spec
        self.model = model
        self.headers = server_client.auth_headers(api_key)
        self.api_key = api_key
        self.on_progress = on_progress
        self.records: list[RequestRecord] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.started = time.perf_counter()
        self.stopping = False
        self.timed = True

    def body(self, index: int) -> dict[str, Any]:
        spec = self.spec
        if not self.timed:
            index = 0  # warm-ups are copies of request 0 (vLLM --num-warmups)
        prompt_length = length_for(spec.prompt_tokens, spec.prompt_range, index, spec.seed, 1)
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": make_prompt(prompt_length, index, spec.seed),
            "max_tokens": length_for(spec.output_tokens, spec.output_range, index, spec.seed, 2),
            "ignore_eos": spec.ignore_eos,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if spec.temperature is not None:
            body["temperature"] = spec.temperature
        return body

    def record(self, record: RequestRecord) -> None:
        self.records.append(record)
        if self.on_progress is not None and self.timed:
            ok = sum(1 for item in self.records if item.outcome is Outcome.OK)
            self.on_progress(
                LoadProgress(
                    finished=len(self.records),
                    total=self.spec.requests,
                    ok=ok,
                    failed=len(self.records) - ok,
                    generated_tokens=sum(item.generated_tokens for item in self.records),
                    elapsed_s=time.perf_counter() - self.started,
                )
            )

    async def _stream(
        self, client: httpx.AsyncClient, index: int, state: _StreamState
    ) -> tuple[Outcome, str | None]:
        """Sends one request and reads its stream into ``state``."""
        async with client.stream(
            "POST", self.completions_url, json=self.body(index), headers=self.headers
        ) as response:
            state.status = response.status_code
            if response.status_code >= 400:
                text = (await response.aread()).decode("utf-8", "replace")
                return Outcome.HTTP_ERROR, f"HTTP {response.status_code}: {_one_line(text)}"
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                server_error = state.on_data(line[len("data:") :].strip(), time.perf_counter())
                if server_error is not None:
                    return Outcome.HTTP_ERROR, f"server error in stream: {server_error}"
        if not state.done:
            return Outcome.CONNECTION_ERROR, "the stream ended before [DONE]"
        if state.first_token_at is None:
            return Outcome.BAD_RESPONSE, "the stream carried no token"
        return Outcome.OK, None

    async def send(
        self, client: httpx.AsyncClient, index: int, arrival: float, slot: asyncio.Semaphore
    ) -> None:
        """Sends one request (its slot already taken) and records its outcome, whatever happens."""
        started = time.perf_counter()
        state = _StreamState()
        try:
            outcome, error = await asyncio.wait_for(self._stream(client, index, state), self.spec.timeout_s)
        except asyncio.CancelledError:
            self.record(self._make_record(index, arrival, started, state, Outcome.CANCELLED, "cancelled"))
            raise
        except (asyncio.TimeoutError, httpx.TimeoutException):
            outcome, error = Outcome.TIMEOUT, f"no complete answer within {self.spec.timeout_s:g} s"
        except httpx.TransportError as failure:  # refused, reset, closed mid-stream
            detail = _one_line(str(failure)) or "the connection broke"
            outcome, error = Outcome.CONNECTION_ERROR, f"{type(failure).__name__}: {detail}"
        except (ValueError, KeyError, TypeError, AttributeError) as failure:
            outcome, error = Outcome.BAD_RESPONSE, _one_line(f"unreadable stream chunk: {failure}")
        finally:
            slot.release()
        self.record(self._make_record(index, arrival, started, state, outcome, error))

    def _make_record(
        self,
        index: int,
        arrival: float,
        started: float,
        state: _StreamState,
        outcome: Outcome,
        error: str | None,
    ) -> RequestRecord:
        usage = state.usage or {}
        completion_tokens = usage.get("completion_tokens")
        prompt_tokens = usage.get("prompt_tokens")
        from_usage = isinstance(completion_tokens, int)
        generated = completion_tokens if isinstance(completion_tokens, int) else state.chunks

        def since_start(stamp: float | None) -> float | None:
            return None if stamp is None else stamp - started

        return RequestRecord(
            index=index,
            outcome=outcome,
            started_s=started - self.started,
            latency_s=time.perf_counter() - started,
            ttft_s=since_start(state.first_token_at),
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
            generated_tokens=generated,
            tokens_from_usage=from_usage,
            last_token_s=since_start(state.last_token_at),
            status_code=state.status,
            error=None if error is None else server_client.redact(error, [self.api_key]),
            arrival_s=arrival,
            itl_s=tuple(state.gaps),
            first_text_s=since_start(state.first_text_at),
        )

    async def dispatch(self, client: httpx.AsyncClient, count: int | None, offsets: Sequence[float]) -> None:
        """Releases requests at their arrival times, each once a slot is free, then waits for them all."""
        spec = self.spec
        slot = asyncio.Semaphore(spec.concurrency)
        index = 0
        while not self.stopping and (count is None or index < count):
            arrival = offsets[index] if index < len(offsets) else 0.0
            if spec.duration_s is not None and self.timed and arrival >= spec.duration_s:
                break
            delay = self.started + arrival - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await slot.acquire()
            elapsed = time.perf_counter() - self.started
            if self.stopping or (spec.duration_s is not None and self.timed and elapsed >= spec.duration_s):
                slot.release()
                break
            self.tasks.append(asyncio.create_task(self.send(client, index, arrival, slot)))
            index += 1
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _watch_stop(stop_event: threading.Event, run: _LoadRun, dispatcher: asyncio.Task[None]) -> None:
    """Stops the dispatcher and cancels requests in flight (recorded as cancelled) once the event is set."""
    while not stop_event.is_set():
        await asyncio.sleep(_STOP_CHECK_S)
    run.stopping = True
    dispatcher.cancel()
    for task in run.tasks:
        task.cancel()


async def _run_phase(
    run: _LoadRun,
    client: httpx.AsyncClient,
    count: int | None,
    offsets: Sequence[float],
    stop_event: threading.Event | None,
) -> None:
    dispatcher = asyncio.create_task(run.dispatch(client, count, offsets))
    watcher = asyncio.create_task(_watch_stop(stop_event, run, dispatcher)) if stop_event else None
    await asyncio.gather(dispatcher, return_exceptions=True)
    await asyncio.gather(*run.tasks, return_exceptions=True)
    if watcher is not None:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def _timed_offsets(spec: LoadSpec) -> list[float]:
    """Arrival times of the timed requests; a duration-bound open loop draws enough to fill the duration."""
    if math.isinf(spec.request_rate):
        return []
    count = spec.requests
    if count is None:
        count = max(1, math.ceil((spec.duration_s or 0.0) * spec.request_rate))
    return arrival_offsets(count, spec.request_rate, spec.burstiness, spec.seed)


async def generate_load(
    base_url: str,
    spec: LoadSpec,
    api_key: str | None = None,
    on_progress: Callable[[LoadProgress], None] | None = None,
    stop_event: threading.Event | None = None,
) -> LoadResult:
    """Sends streamed ``/v1/completions`` requests at the spec's arrival rate, at most ``spec.concurrency`` at a time.

    Warm-up requests (copies of request 0) go first and are left out of the result's figures; the
    clock of the timed run starts just before its first dispatch, as in vLLM.

    Args:
        base_url: The server's URL (``http://host:port``, with or without ``/v1``).
        spec: What load to send.
        api_key: Sent as ``Authorization: Bearer <key>``; never written into a record.
        on_progress: Called after every finished timed request.
        stop_event: Set it to stop: no new requests, in-flight ones are cancelled and counted so.

    Returns:
        The measurements, with one record per timed request released.

    Raises:
        LoadError: Bad settings, or (when ``spec.model`` is not given) the server cannot be asked
            for its model name.
    """
    spec.check()
    root = api_base_url(base_url)
    model = spec.model if spec.model else await asyncio.to_thread(served_model_name, root, api_key)
    run = _LoadRun(root, spec, model, api_key, on_progress)
    limits = httpx.Limits(max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency)
    timeout = httpx.Timeout(spec.timeout_s, connect=min(spec.timeout_s, 10.0))
    warmup_outcomes: dict[str, int] = {}
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        if spec.num_warmups:
            run.timed = False
            await _run_phase(run, client, spec.num_warmups, [], stop_event)
            warmup_outcomes = dict(Counter(record.outcome.value for record in run.records))
            run.records, run.tasks, run.timed = [], [], True
        if not run.stopping:
            run.started = time.perf_counter()
            await _run_phase(run, client, spec.requests, _timed_offsets(spec), stop_event)
        duration = time.perf_counter() - run.started
        if not run.timed:
            duration = 0.0
    records = tuple(sorted(run.records, key=lambda record: record.index))
    return LoadResult(spec, model, duration, records, stopped=run.stopping, warmup_outcomes=warmup_outcomes)


def run_load(
    base_url: str,
    spec: LoadSpec,
    api_key: str | None = None,
    on_progress: Callable[[LoadProgress], None] | None = None,
    stop_event: threading.Event | None = None,
) -> LoadResult:
    """:func:`generate_load` for threads and the CLI: runs its own event loop until the load is done.

    Args:
        base_url: The server's URL.
        spec: What load to send.
        api_key: Sent as ``Authorization: Bearer <key>``.
        on_progress: Called (in this thread) after every finished request.
        stop_event: Set it from another thread to stop early.
    """
    return asyncio.run(generate_load(base_url, spec, api_key, on_progress, stop_event))
