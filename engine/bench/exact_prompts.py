"""Prompts of an exact token count, fitted with the server's own tokenizer, as vLLM's random dataset fits its prompts.

``vllm bench serve --dataset-name random`` sends prompts that re-encode to exactly ``--random-input-len``
tokens (special tokens not counted). quant-tui's word prompts are about one token a word, which on a
small BPE vocabulary is 10-15 % more, and a longer prompt is a heavier prefill: a higher TTFT that says
nothing about the measurement. With vLLM's ``/tokenize`` and ``/detokenize`` each prompt is cut to the
asked length instead; a server without them gets the word prompts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

__all__ = ["FIT_RETRIES", "fit_prompts", "fitted_text"]

# vLLM's gen_prompt_decode_to_target_len retries; a decode that re-encodes differently is re-cut this often.
FIT_RETRIES = 10
_CALL_TIMEOUT = aiohttp.ClientTimeout(total=30)


class _NoTokenizer(Exception):
    """The server has no usable ``/tokenize`` or ``/detokenize``."""


async def _post(
    session: aiohttp.ClientSession, url: str, body: Mapping[str, Any], headers: Mapping[str, str]
) -> dict[str, Any]:
    try:
        async with session.post(
            url, json=dict(body), headers=dict(headers), timeout=_CALL_TIMEOUT
        ) as response:
            if response.status != 200:
                raise _NoTokenizer(f"HTTP {response.status}")
            data = await response.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
        raise _NoTokenizer(str(error)) from error
    if not isinstance(data, dict):
        raise _NoTokenizer("not a JSON object")
    return data


async def fitted_text(
    session: aiohttp.ClientSession,
    root: str,
    headers: Mapping[str, str],
    model: str,
    text: str,
    target: int,
) -> tuple[str, int]:
    """``text`` cut to ``target`` tokens (without special tokens) by the server's tokenizer; and its final count.

    As vLLM: encode, cut the ids, decode, encode again; a decode that re-encodes to a different length
    is cut again, up to :data:`FIT_RETRIES` times, and the last count is returned as it is.

    Raises:
        _NoTokenizer: The server cannot tokenize.
    """
    count = -1
    for _ in range(FIT_RETRIES + 1):
        body = {"model": model, "prompt": text, "add_special_tokens": False}
        tokens = (await _post(session, f"{root}/tokenize", body, headers)).get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(token, int) for token in tokens):
            raise _NoTokenizer("no token list in the /tokenize answer")
        count = len(tokens)
        if count <= target:
            return text, count
        decoded = await _post(
            session, f"{root}/detokenize", {"model": model, "tokens": tokens[:target]}, headers
        )
        prompt = decoded.get("prompt")
        if not isinstance(prompt, str):
            raise _NoTokenizer("no prompt in the /detokenize answer")
        text = prompt
    return text, count


async def fit_prompts(
    session: aiohttp.ClientSession,
    root: str,
    headers: Mapping[str, str],
    model: str,
    prompts: Sequence[tuple[str, int]],
    concurrency: int,
) -> list[str] | None:
    """Every ``(text, target)`` fitted to its target; ``None`` when the server cannot tokenize (keep the words).

    Args:
        session: The load's session.
        root: The server's root URL.
        headers: The load's headers (its API key).
        model: The served model name.
        prompts: Word prompts at least as long as their target, and the target token counts.
        concurrency: Calls in flight at once.
    """
    slot = asyncio.Semaphore(max(1, concurrency))

    async def one(text: str, target: int) -> str:
        async with slot:
            return (await fitted_text(session, root, headers, model, text, target))[0]

    try:
        return list(await asyncio.gather(*(one(text, target) for text, target in prompts)))
    except _NoTokenizer:
        return None
