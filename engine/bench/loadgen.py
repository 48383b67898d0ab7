"""A bounded async load generator for an OpenAI-compatible server: streamed completions, every outcome counted."""

from __future__ import annotations

import asyncio
import enum
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from engine.errors import QuantTuiError

__all__ = [
    "LoadError",
    "LoadProgress",
    "LoadResult",
    "LoadSpec",
    "Outcome",
    "RequestRecord",
    "api_base_url",
    "generate_load",
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


class Outcome(str, enum.Enum):
    """How one request ended."""

    OK = "ok"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    CANCELLED = "cancelled"
    BAD_RESPONSE = "bad_response"


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What load to send.

    Attributes:
        concurrency: Requests in flight at once.
        prompt_tokens: Prompt length, in tokens (approximate: built from common words).
        output_tokens: ``max_tokens`` of each request; with ``ignore_eos`` every request generates exactly this many.
        requests: How many requests to send in all (``None``: until ``duration_s``).
        duration_s: Stop starting requests after this many seconds (``None``: until ``requests``).
        model: The served model name; ``None`` asks the server's ``/v1/models``.
        timeout_s: Give up on one request after this many seconds in all.
        ignore_eos: Ask vLLM to ignore the end-of-sequence token so output lengths are exact.
        seed: Seed for the prompt words, so the same spec sends the same prompts.
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


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request and how it went.

    Attributes:
        index: Order in which the request was started.
        outcome: How it ended.
        started_s: Seconds from the start of the load to the request's start.
        latency_s: Seconds from its start to its end (whatever the outcome).
        ttft_s: Seconds to the first streamed token, when one came.
        prompt_tokens: Prompt tokens as the server counted them (usage), when reported.
        generated_tokens: Generated tokens: from the usage chunk, else the number of streamed chunks.
        tokens_from_usage: Whether ``generated_tokens`` is the server's own count.
        last_token_s: Seconds from its start to the last streamed token, when one came.
        status_code: The HTTP status, when an answer came.
        error: One line on what went wrong, else ``None``.
    """

    index: int
    outcome: Outcome
    started_s: float
    latency_s: float
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    generated_tokens: int = 0
    tokens_from_usage: bool = False
    last_token_s: float | None = None
    status_code: int | None = None
    error: str | None = None

    @property
    def time_per_output_token_s(self) -> float | None:
        """Mean gap between this request's tokens after the first (client side), ``None`` under 2 tokens.

        Measured from first to last token rather than chunk by chunk: chunks that arrive together in
        one network read would otherwise count as zero-second gaps.
        """
        if self.ttft_s is None or self.last_token_s is None or self.generated_tokens < 2:
            return None
        return (self.last_token_s - self.ttft_s) / (self.generated_tokens - 1)


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


def _percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` (0..1) percentile with linear interpolation between closest ranks; ``None`` if empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


@dataclass(frozen=True)
class LoadResult:
    """Everything a load run measured; ``records`` holds every request started, whatever its outcome.

    Attributes:
        spec: The load that was asked for.
        model: The model name the requests used.
        duration_s: Seconds from the first request's start to the last one's end.
        records: One record per request started, in start order.
        stopped: Whether the stop event ended the load early.
    """

    spec: LoadSpec
    model: str
    duration_s: float
    records: tuple[RequestRecord, ...]
    stopped: bool = False
    outcomes: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        counts = Counter(record.outcome.value for record in self.records)
        object.__setattr__(
            self, "outcomes", {outcome.value: counts.get(outcome.value, 0) for outcome in Outcome}
        )

    def _ok(self) -> list[RequestRecord]:
        return [record for record in self.records if record.outcome is Outcome.OK]

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
        """Tokens generated over all requests (partial streams included)."""
        return sum(record.generated_tokens for record in self.records)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens the server reported over all requests."""
        return sum(record.prompt_tokens or 0 for record in self.records)

    @property
    def output_tokens_per_s(self) -> float | None:
        """Generated tokens per second of wall time, over the whole load."""
        return self.generated_tokens / self.duration_s if self.duration_s > 0 else None

    @property
    def requests_per_s(self) -> float | None:
        """Completed requests per second."""
        return self.ok_requests / self.duration_s if self.duration_s > 0 else None

    def ttft_s(self, q: float) -> float | None:
        """Client-side time-to-first-token percentile over completed requests."""
        return _percentile([r.ttft_s for r in self._ok() if r.ttft_s is not None], q)

    def inter_token_s(self, q: float) -> float | None:
        """Client-side time per output token after the first, percentile over completed requests."""
        values = [record.time_per_output_token_s for record in self._ok()]
        return _percentile([value for value in values if value is not None], q)

    def latency_s(self, q: float) -> float | None:
        """End-to-end request latency percentile over completed requests."""
        return _percentile([record.latency_s for record in self._ok()], q)

    def summary(self) -> dict[str, Any]:
        """The headline figures as a JSON-ready dict (no per-request records)."""
        return {
            "model": self.model,
            "concurrency": self.spec.concurrency,
            "prompt_tokens_requested": self.spec.prompt_tokens,
            "output_tokens_requested": self.spec.output_tokens,
            "requests": len(self.records),
            "outcomes": dict(self.outcomes),
            "stopped": self.stopped,
            "duration_s": self.duration_s,
            "generated_tokens": self.generated_tokens,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens_per_s": self.output_tokens_per_s,
            "requests_per_s": self.requests_per_s,
            "ttft_p50_s": self.ttft_s(0.5),
            "ttft_p95_s": self.ttft_s(0.95),
            "itl_p50_s": self.inter_token_s(0.5),
            "itl_p95_s": self.inter_token_s(0.95),
            "latency_p50_s": self.latency_s(0.5),
            "latency_p95_s": self.latency_s(0.95),
        }

    def to_dict(self) -> dict[str, Any]:
        """The summary plus every request record."""
        data = self.summary()
        data["spec"] = asdict(self.spec)
        data["records"] = [{**asdict(record), "outcome": record.outcome.value} for record in self.records]
        return data


def api_base_url(url: str) -> str:
    """The server's root URL (no trailing ``/``, no ``/v1``) from whatever form the user typed.

    Raises:
        LoadError: The URL is empty or not http(s).
    """
    text = url.strip().rstrip("/")
    if not text:
        raise LoadError("no server URL given; pass one like http://127.0.0.1:8000")
    if "://" not in text:
        text = "http://" + text
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, ValueError) as error:
        raise LoadError(f"{url!r} is not a URL; pass one like http://127.0.0.1:8000") from error
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise LoadError(f"{url!r} is not an http(s) URL; pass one like http://127.0.0.1:8000")
    path = parsed.path.rstrip("/")
    for suffix in ("/metrics", "/v1"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    return str(parsed.copy_with(path=path or "/", query=None)).rstrip("/")


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def served_model_name(base_url: str, api_key: str | None = None, timeout_s: float = 10.0) -> str:
    """The first model the server lists at ``/v1/models``.

    Raises:
        LoadError: The server cannot be reached or lists no model.
    """
    url = api_base_url(base_url) + "/v1/models"
    try:
        response = httpx.get(url, headers=_headers(api_key), timeout=timeout_s)
        response.raise_for_status()
        models = response.json().get("data") or []
        return str(models[0]["id"])
    except httpx.HTTPStatusError as error:
        raise LoadError(
            f"{url} answered HTTP {error.response.status_code}; check the URL and --api-key"
        ) from error
    except httpx.HTTPError as error:
        raise LoadError(f"cannot reach {url} ({type(error).__name__}); is the server running?") from error
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise LoadError(f"{url} lists no model; is this an OpenAI-compatible server?") from error


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


def _one_line(text: str) -> str:
    return " ".join(text.split())[:_HTTP_ERROR_EXCERPT_CHARS]


class _StreamState:
    """What has arrived on one stream so far."""

    def __init__(self) -> None:
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
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
        if any(choice.get("text") for choice in message.get("choices") or []):
            if self.first_token_at is None:
                self.first_token_at = now
            self.last_token_at = now
            self.chunks += 1
        return None


class _LoadRun:
    """One run of :func:`generate_load`: shared counters of the worker coroutines."""

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
        self.headers = _headers(api_key)
        self.on_progress = on_progress
        self.records: list[RequestRecord] = []
        self.next_index = 0
        self.started = time.monotonic()
        self.stopping = False

    def take_index(self) -> int | None:
        """The next request's index, or ``None`` when the load is complete."""
        spec = self.spec
        if self.stopping:
            return None
        if spec.requests is not None and self.next_index >= spec.requests:
            return None
        if spec.duration_s is not None and time.monotonic() - self.started >= spec.duration_s:
            return None
        index = self.next_index
        self.next_index += 1
        return index

    def body(self, index: int) -> dict[str, Any]:
        spec = self.spec
        return {
            "model": self.model,
            "prompt": make_prompt(spec.prompt_tokens, index, spec.seed),
            "max_tokens": spec.output_tokens,
            "ignore_eos": spec.ignore_eos,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def record(self, record: RequestRecord) -> None:
        self.records.append(record)
        if self.on_progress is not None:
            ok = sum(1 for item in self.records if item.outcome is Outcome.OK)
            self.on_progress(
                LoadProgress(
                    finished=len(self.records),
                    total=self.spec.requests,
                    ok=ok,
                    failed=len(self.records) - ok,
                    generated_tokens=sum(item.generated_tokens for item in self.records),
                    elapsed_s=time.monotonic() - self.started,
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
                server_error = state.on_data(line[len("data:") :].strip(), time.monotonic())
                if server_error is not None:
                    return Outcome.HTTP_ERROR, f"server error in stream: {server_error}"
        if not state.done:
            return Outcome.CONNECTION_ERROR, "the stream ended before [DONE]"
        return Outcome.OK, None

    async def send(self, client: httpx.AsyncClient, index: int) -> None:
        """Sends one request and records its outcome, whatever happens (cancellation included)."""
        started = time.monotonic()
        state = _StreamState()
        try:
            outcome, error = await asyncio.wait_for(self._stream(client, index, state), self.spec.timeout_s)
        except asyncio.CancelledError:
            self.record(self._make_record(index, started, state, Outcome.CANCELLED, "cancelled"))
            raise
        except (asyncio.TimeoutError, httpx.TimeoutException):
            outcome, error = Outcome.TIMEOUT, f"no complete answer within {self.spec.timeout_s:g} s"
        except httpx.TransportError as failure:  # refused, reset, closed mid-stream
            detail = _one_line(str(failure)) or "the connection broke"
            outcome, error = Outcome.CONNECTION_ERROR, f"{type(failure).__name__}: {detail}"
        except (ValueError, KeyError, TypeError, AttributeError) as failure:
            outcome, error = Outcome.BAD_RESPONSE, _one_line(f"unreadable stream chunk: {failure}")
        self.record(self._make_record(index, started, state, outcome, error))

    def _make_record(
        self,
        index: int,
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
        return RequestRecord(
            index=index,
            outcome=outcome,
            started_s=started - self.started,
            latency_s=time.monotonic() - started,
            ttft_s=state.first_token_at - started if state.first_token_at is not None else None,
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
            generated_tokens=generated,
            tokens_from_usage=from_usage,
            last_token_s=state.last_token_at - started if state.last_token_at is not None else None,
            status_code=state.status,
            error=error,
        )

    async def worker(self, client: httpx.AsyncClient) -> None:
        while (index := self.take_index()) is not None:
            await self.send(client, index)


async def _watch_stop(stop_event: threading.Event, workers: list[asyncio.Task[None]], run: _LoadRun) -> None:
    """Cancels the workers (their in-flight requests are recorded as cancelled) once the event is set."""
    while not stop_event.is_set():
        await asyncio.sleep(_STOP_CHECK_S)
    run.stopping = True
    for task in workers:
        task.cancel()


async def generate_load(
    base_url: str,
    spec: LoadSpec,
    api_key: str | None = None,
    on_progress: Callable[[LoadProgress], None] | None = None,
    stop_event: threading.Event | None = None,
) -> LoadResult:
    """Sends streamed ``/v1/completions`` requests, at most ``spec.concurrency`` at a time.

    Args:
        base_url: The server's URL (``http://host:port``, with or without ``/v1``).
        spec: What load to send.
        api_key: Sent as ``Authorization: Bearer <key>``.
        on_progress: Called after every finished request.
        stop_event: Set it to stop: no new requests, in-flight ones are cancelled and counted so.

    Returns:
        The measurements, with one record per request started.

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
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        workers = [asyncio.create_task(run.worker(client)) for _ in range(spec.concurrency)]
        watcher = asyncio.create_task(_watch_stop(stop_event, workers, run)) if stop_event else None
        await asyncio.gather(*workers, return_exceptions=True)
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    records = tuple(sorted(run.records, key=lambda record: record.index))
    duration = max((r.started_s + r.latency_s for r in records), default=0.0)
    return LoadResult(spec, model, duration, records, stopped=run.stopping)


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
