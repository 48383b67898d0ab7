"""Tests for engine.bench.sse_stream: SSE bytes read in any split, stamped per read, as vLLM's client reads them."""

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


def _read(pieces: list[bytes]) -> StreamState:
    state = StreamState()
    for now, piece in enumerate(pieces):
        assert state.feed(piece, float(now)) is None
    return state


@pytest.mark.parametrize("cut", range(0, len(BODY), 7))
def test_any_split_reads_the_same(cut: int) -> None:
    state = _read([BODY[:cut], BODY[cut:]])
    assert state.done and state.chunks == 2
    assert (state.prompt_tokens, state.completion_tokens) == (9, 2)


@pytest.mark.parametrize(
    ("pieces", "first", "last", "gaps", "first_text"),
    [
        # Both tokens in one read: one stamp, a zero gap (vLLM's client reads it the same way).
        ([BODY], 0.0, 0.0, [0.0], 0.0),
        # One read per message: stamps 0, 1; the usage and [DONE] reads stamp no token.
        ([BODY[: BODY.index(b"\n\n") + 2], BODY[BODY.index(b"\n\n") + 2 :]], 0.0, 1.0, [1.0], 0.0),
    ],
)
def test_stamps_per_read(
    pieces: list[bytes], first: float, last: float, gaps: list[float], first_text: float
) -> None:
    state = _read(pieces)
    assert (state.first_token_at, state.last_token_at, state.gaps, state.first_text_at) == (
        first,
        last,
        gaps,
        first_text,
    )


def test_crlf_comments_and_a_cut_last_line() -> None:
    state = _read(
        [b": ping\r\n\r\n", BODY.replace(b"\n", b"\r\n").replace(b"data: [DONE]\r\n\r\n", b"data: [DO")]
    )
    assert state.chunks == 2 and state.completion_tokens == 2
    assert not state.done  # the cut [DONE] is never read: the stream counts as broken


def test_a_server_error_in_the_stream_is_returned() -> None:
    state = StreamState()
    error = state.feed(b'data: {"error": {"message": "engine\\n  dead", "code": 500}}\n\n', 0.0)
    assert error == "engine dead"
