"""Tests for engine.bench.sse_stream: SSE bytes read in any split, each token stamped after parsing, as vLLM's client."""

from __future__ import annotations

import pytest

from engine.bench.sse_stream import StreamState

# What vLLM 0.32 streams for a 2-token completion with include_usage (the second token is a special one: empty text).
BODY = (
    b'data: {"id":"cmpl-1","choices":[{"index":0,"text":" the","finish_reason":null}]}\n\n'
    b'data: {"id":"cmpl-1","choices":[{"index":0,"text":"","finish_reason":"length"}]}\n\n'
    b'data: {"id":"cmpl-1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}\n\n'
    b"data: [DONE]\n\n"
)


class StepClock:
    """A clock that reads ``start``, ``start + step``, ... one step per call, and counts its calls."""

    def __init__(self, start: float = 0.0, step: float = 1.0) -> None:
        self.now, self.step, self.calls = start - step, step, 0

    def __call__(self) -> float:
        self.now += self.step
        self.calls += 1
        return self.now


def _read(pieces: list[bytes], clock: StepClock | None = None) -> StreamState:
    state, clock = StreamState(), clock or StepClock()
    for piece in pieces:
        assert state.feed(piece, clock) is None
    return state


@pytest.mark.parametrize("cut", range(0, len(BODY), 7))
def test_any_split_reads_the_same(cut: int) -> None:
    state = _read([BODY[:cut], BODY[cut:]])
    assert state.done and state.chunks == 2
    assert (state.prompt_tokens, state.completion_tokens) == (9, 2)


@pytest.mark.parametrize("split", ["one read", "one read per message"])
def test_each_token_is_stamped_once_after_it_is_parsed(split: str) -> None:
    # vLLM's request function reads perf_counter() after json.loads of each message with choices, so
    # however the bytes were split the clock is read twice here (two tokens; usage and [DONE] carry no
    # choices): the first call stamps token 1 (10.0), the second token 2 (10.25); one gap of 0.25 s.
    messages = [message + b"\n\n" for message in BODY.split(b"\n\n") if message]
    clock = StepClock(start=10.0, step=0.25)
    state = _read([BODY] if split == "one read" else messages, clock)
    assert clock.calls == 2
    assert (state.first_token_at, state.last_token_at, state.gaps) == (10.0, 10.25, [0.25])
    assert state.first_text_at == 10.0  # " the": the first token has text; the empty second never would


def test_the_first_text_is_the_first_token_with_text() -> None:
    # A special token (empty text) first, then " the": the first token at 5.0, the first text at 6.0.
    empty_first = (
        b'data: {"choices":[{"index":0,"text":""}]}\n\n'
        b'data: {"choices":[{"index":0,"text":" the"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    state = _read([empty_first], StepClock(start=5.0))
    assert (state.first_token_at, state.first_text_at, state.gaps) == (5.0, 6.0, [1.0])


def test_crlf_comments_and_a_cut_last_line() -> None:
    state = _read(
        [b": ping\r\n\r\n", BODY.replace(b"\n", b"\r\n").replace(b"data: [DONE]\r\n\r\n", b"data: [DO")]
    )
    assert state.chunks == 2 and state.completion_tokens == 2
    assert not state.done  # the cut [DONE] is never read: the stream counts as broken


def test_a_server_error_in_the_stream_is_returned() -> None:
    state = StreamState()
    error = state.feed(b'data: {"error": {"message": "engine\\n  dead", "code": 500}}\n\n', StepClock())
    assert error == "engine dead"
