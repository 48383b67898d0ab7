"""An async load generator for an OpenAI-compatible server, measuring as ``vllm bench serve`` does; every outcome counted."""

from __future__ import annotations

import asyncio
import gc
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from engine.bench.arrivals import arrival_offsets
from engine.bench.exact_prompts import fit_prompts
from engine.bench.load_result import LoadProgress, LoadResult
from engine.bench.load_spec import LoadError, LoadSpec, length_for, make_prompt
from engine.bench.metrics import Outcome, RequestRecord
from engine.bench.sse_stream import StreamState, one_line
from engine.serve import client as server_client

_STOP_CHECK_S = 0.05
# Prompts fitted to their exact token count before the run (vLLM's random dataset does it for all of them);
# a longer or duration-bound load keeps the word prompts (about one token a word).
_MAX_FITTED_PROMPTS = 4096


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


class _LoadRun:
    """One run of :func:`run_load`: the dispatcher, the requests in flight and their records."""

    def __init__(
        self,
        base_url: str,
        spec: LoadSpec,
        model: str,
        api_key: str | None,
        on_progress: Callable[[LoadProgress], None] | None,
    ) -> None:
        self.root = base_url
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
        self.fitted_prompts: list[str] | None = None
        # Per request, covering the whole answer (aiohttp's total), so no extra task wraps each request.
        self.timeout = aiohttp.ClientTimeout(total=spec.timeout_s, connect=min(spec.timeout_s, 10.0))

    def prompt_length(self, index: int) -> int:
        spec = self.spec
        return length_for(spec.prompt_tokens, spec.prompt_range, index, spec.seed, 1)

    async def fit_prompts(self, session: aiohttp.ClientSession) -> None:
        """Cuts every prompt to its exact token count with the server's tokenizer, where it has one."""
        spec = self.spec
        count = max(spec.requests or 0, 1)
        if spec.prompts or spec.requests is None or count > _MAX_FITTED_PROMPTS:
            return
        words = []
        for index in range(count):
            length = self.prompt_length(index)
            # A quarter more words than tokens: every word is at least one token, so each is cut, never padded.
            words.append((make_prompt(length + length // 4 + 4, index, spec.seed), length))
        self.fitted_prompts = await fit_prompts(
            session, self.root, self.headers, self.model, words, spec.concurrency
        )

    def body(self, index: int) -> dict[str, Any]:
        spec = self.spec
        if not self.timed:
            index = 0  # warm-ups are copies of request 0 (vLLM --num-warmups)
        fitted = self.fitted_prompts
        if spec.prompts:
            prompt = spec.prompts[index % len(spec.prompts)]
        elif fitted is not None and index < len(fitted):
            prompt = fitted[index]
        else:
            prompt = make_prompt(self.prompt_length(index), index, spec.seed)
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
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
        self, session: aiohttp.ClientSession, body: dict[str, Any], state: StreamState
    ) -> tuple[Outcome, str | None]:
        """Sends one request and reads its stream into ``state``, as raw reads (vLLM's ``iter_any``)."""
        async with session.post(
            self.completions_url, json=body, headers=self.headers, timeout=self.timeout
        ) as response:
            state.status = response.status
            if response.status >= 400:
                text = (await response.read()).decode("utf-8", "replace")
                return Outcome.HTTP_ERROR, f"HTTP {response.status}: {one_line(text)}"
            async for data in response.content.iter_any():
                server_error = state.feed(data, time.perf_counter)
                if server_error is not None:
                    return Outcome.HTTP_ERROR, f"server error in stream: {server_error}"
        if not state.done:
            return Outcome.CONNECTION_ERROR, "the stream ended before [DONE]"
        if state.first_token_at is None:
            return Outcome.BAD_RESPONSE, "the stream carried no token"
        return Outcome.OK, None

    def past_duration(self) -> bool:
        """Whether a duration-bound timed run is over (no more requests are sent)."""
        duration = self.spec.duration_s
        return duration is not None and self.timed and time.perf_counter() - self.started >= duration

    async def send(
        self,
        session: aiohttp.ClientSession,
        index: int,
        arrival: float,
        slot: asyncio.Semaphore,
        ticket: asyncio.Semaphore,
    ) -> None:
        """Waits for a free slot, sends one request and records its outcome, whatever happens.

        As in vLLM's benchmark the request itself waits on the concurrency semaphore, so a freed slot
        goes straight to the next request. One cancelled while it waits was never sent: no record.
        """
        try:
            async with slot:
                if self.stopping or self.past_duration():
                    return
                await self._send_now(session, index, arrival)
        finally:
            ticket.release()

    async def _send_now(self, session: aiohttp.ClientSession, index: int, arrival: float) -> None:
        # vLLM reads its start time once the body is built, just before the post: building it is not TTFT.
        body = self.body(index)
        state = StreamState()
        started = time.perf_counter()
        try:
            outcome, error = await self._stream(session, body, state)
        except asyncio.CancelledError:
            self.record(self._make_record(index, arrival, started, state, Outcome.CANCELLED, "cancelled"))
            raise
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            outcome, error = Outcome.TIMEOUT, f"no complete answer within {self.spec.timeout_s:g} s"
        except aiohttp.ClientError as failure:  # refused, reset, closed mid-stream
            detail = one_line(str(failure)) or "the connection broke"
            outcome, error = Outcome.CONNECTION_ERROR, f"{type(failure).__name__}: {detail}"
        except (ValueError, KeyError, TypeError, AttributeError) as failure:
            outcome, error = Outcome.BAD_RESPONSE, one_line(f"unreadable stream chunk: {failure}")
        self.record(self._make_record(index, arrival, started, state, outcome, error))

    def _make_record(
        self,
        index: int,
        arrival: float,
        started: float,
        state: StreamState,
        outcome: Outcome,
        error: str | None,
    ) -> RequestRecord:
        from_usage = state.completion_tokens is not None
        generated = state.completion_tokens if state.completion_tokens is not None else state.chunks

        def since_start(stamp: float | None) -> float | None:
            return None if stamp is None else stamp - started

        return RequestRecord(
            index=index,
            outcome=outcome,
            started_s=started - self.started,
            latency_s=time.perf_counter() - started,
            ttft_s=since_start(state.first_token_at),
            prompt_tokens=state.prompt_tokens,
            generated_tokens=generated,
            tokens_from_usage=from_usage,
            last_token_s=since_start(state.last_token_at),
            status_code=state.status,
            error=None if error is None else server_client.redact(error, [self.api_key]),
            arrival_s=arrival,
            itl_s=tuple(state.gaps),
            first_text_s=since_start(state.first_text_at),
        )

    async def dispatch(
        self, session: aiohttp.ClientSession, count: int | None, offsets: Sequence[float]
    ) -> None:
        """Releases requests at their arrival times (each then waits for a slot), then waits for them all.

        At most twice the concurrency are released and not yet done, so a duration-bound closed loop
        does not pile up requests that will never be sent.
        """
        spec = self.spec
        slot = asyncio.Semaphore(spec.concurrency)
        ticket = asyncio.Semaphore(2 * spec.concurrency)
        index = 0
        while not self.stopping and (count is None or index < count):
            arrival = offsets[index] if index < len(offsets) else 0.0
            if spec.duration_s is not None and self.timed and arrival >= spec.duration_s:
                break
            delay = self.started + arrival - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await ticket.acquire()
            if self.stopping or self.past_duration():
                ticket.release()
                break
            self.tasks.append(asyncio.create_task(self.send(session, index, arrival, slot, ticket)))
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
    session: aiohttp.ClientSession,
    count: int | None,
    offsets: Sequence[float],
    stop_event: threading.Event | None,
) -> None:
    dispatcher = asyncio.create_task(run.dispatch(session, count, offsets))
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


async def _generate_load(run: _LoadRun, stop_event: threading.Event | None) -> LoadResult:
    """The body of :func:`run_load`, inside its event loop."""
    spec, model = run.spec, run.model
    # As vLLM's benchmark: one connection per request in flight, kept alive; the timeout is per request.
    connector = aiohttp.TCPConnector(
        limit=spec.concurrency, limit_per_host=spec.concurrency, keepalive_timeout=60
    )
    timeout = aiohttp.ClientTimeout(total=None, connect=min(spec.timeout_s, 10.0))
    warmup_outcomes: dict[str, int] = {}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await run.fit_prompts(session)
        if spec.num_warmups:
            run.timed = False
            await _run_phase(run, session, spec.num_warmups, [], stop_event)
            warmup_outcomes = dict(Counter(record.outcome.value for record in run.records))
            run.records, run.tasks, run.timed = [], [], True
        # Like vLLM: collect now and freeze what survives, so no long collection pauses the timed run.
        gc.collect()
        gc.freeze()
        try:
            if not run.stopping:
                run.started = time.perf_counter()
                await _run_phase(run, session, spec.requests, _timed_offsets(spec), stop_event)
            duration = time.perf_counter() - run.started
        finally:
            gc.unfreeze()
        if not run.timed:
            duration = 0.0
    records = tuple(sorted(run.records, key=lambda record: record.index))
    return LoadResult(spec, model, duration, records, stopped=run.stopping, warmup_outcomes=warmup_outcomes)


def _prepared_run(
    base_url: str,
    spec: LoadSpec,
    api_key: str | None,
    on_progress: Callable[[LoadProgress], None] | None,
) -> _LoadRun:
    """A run against ``base_url``, for the spec's model or (when it names none) the one the server serves."""
    root = api_base_url(base_url)
    model = spec.model if spec.model else served_model_name(root, api_key)
    return _LoadRun(root, spec, model, api_key, on_progress)


def timed_prompts(base_url: str, spec: LoadSpec, api_key: str | None = None) -> list[str]:
    """The prompts the timed requests of ``spec`` send, in order, exactly as :func:`run_load` builds them.

    Lets another tool (``vllm bench serve --dataset-name custom``) send the very same prompts.

    Raises:
        LoadError: Bad settings, no request count, or the server cannot be asked for its model name.
    """
    spec.check()
    if spec.requests is None:
        raise LoadError("the prompts of a duration-bound load are not fixed; give a number of requests")
    run = _prepared_run(base_url, spec, api_key, None)

    async def build() -> list[str]:
        async with aiohttp.ClientSession() as session:
            await run.fit_prompts(session)
        return [str(run.body(index)["prompt"]) for index in range(spec.requests or 0)]

    return asyncio.run(build())


def run_load(
    base_url: str,
    spec: LoadSpec,
    api_key: str | None = None,
    on_progress: Callable[[LoadProgress], None] | None = None,
    stop_event: threading.Event | None = None,
) -> LoadResult:
    """Sends streamed ``/v1/completions`` requests at the spec's arrival rate, at most ``spec.concurrency`` at a time.

    Runs its own event loop until the load is done (call it from a thread or the CLI). Prompts are first
    cut to their exact token count with the server's ``/tokenize`` where it has one, as vLLM's random
    dataset does. Warm-up requests (copies of request 0) go first and are left out of the result's
    figures; the clock of the timed run starts just before its first dispatch, as in vLLM.

    Args:
        base_url: The server's URL (``http://host:port``, with or without ``/v1``).
        spec: What load to send.
        api_key: Sent as ``Authorization: Bearer <key>``; never written into a record.
        on_progress: Called (in this thread) after every finished timed request.
        stop_event: Set it from another thread to stop: no new requests, in-flight ones are cancelled
            and counted so.

    Returns:
        The measurements, with one record per timed request released.

    Raises:
        LoadError: Bad settings, or (when ``spec.model`` is not given) the server cannot be asked
            for its model name.
    """
    spec.check()
    return asyncio.run(_generate_load(_prepared_run(base_url, spec, api_key, on_progress), stop_event))
