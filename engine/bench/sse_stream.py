"""One streamed completion as it arrives: SSE messages read and stamped as ``vllm bench serve`` stamps them."""

from __future__ import annotations

import json
from collections.abc import Callable

__all__ = ["StreamState", "one_line"]

_HTTP_ERROR_EXCERPT_CHARS = 160


def one_line(text: str) -> str:
    """``text`` on one line (whitespace runs squeezed), cut to a short excerpt for an error message."""
    return " ".join(text.split())[:_HTTP_ERROR_EXCERPT_CHARS]


class StreamState:
    """What has arrived on one stream so far, stamped as vLLM's request function stamps it."""

    def __init__(self) -> None:
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.first_text_at: float | None = None
        self.gaps: list[float] = []
        self.chunks = 0
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.status: int | None = None
        self.done = False
        self._pending = b""

    def feed(self, data: bytes, clock: Callable[[], float]) -> str | None:
        """Reads bytes as they came off the socket (any split); returns an error line if the server sent one.

        Every complete ``data:`` line is read in order, and a message with choices is stamped by calling
        ``clock`` once, after it is parsed, as vLLM's request function stamps each message: two messages
        that arrive in one read are the parse time of the second apart, not zero. A line cut off by the end
        of the body is never read: the stream then lacks its ``[DONE]`` and counts as broken.
        """
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            error = self._line(line, clock)
            if error is not None:
                return error
        return None

    def _line(self, line: bytes, clock: Callable[[], float]) -> str | None:
        if not line.startswith(b"data:"):
            return None  # blank separators, SSE comments (": ping"), other fields
        return self.on_data(line[len(b"data:") :].strip().decode("utf-8"), clock)

    def on_data(self, payload: str, clock: Callable[[], float]) -> str | None:
        """Reads one SSE ``data:`` payload (a token is stamped ``clock()``); an error line if the server sent one."""
        if payload == "[DONE]":
            self.done = True
            return None
        message = json.loads(payload)
        if not isinstance(message, dict):
            raise ValueError("stream chunk is not a JSON object")
        if "error" in message:
            error = message["error"]
            detail = error.get("message", error) if isinstance(error, dict) else error
            return one_line(str(detail))
        usage = message.get("usage")
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            self.prompt_tokens = prompt if isinstance(prompt, int) else None
            self.completion_tokens = completion if isinstance(completion, int) else None
        choices = message.get("choices")
        if choices:
            # Any message with choices is a token, even with empty text (special tokens), as in vLLM.
            now = clock()
            if self.first_token_at is None or self.last_token_at is None:
                self.first_token_at = now
            else:
                self.gaps.append(now - self.last_token_at)
            self.last_token_at = now
            self.chunks += 1
            if self.first_text_at is None and any(choice.get("text") for choice in choices):
                self.first_text_at = now
        return None
