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
from typing import TYPE_CHECKING

from engine.serve.client import ServerClientError, detokenize, tokenize

if TYPE_CHECKING:
    import aiohttp

__all__ = ["FIT_RETRIES", "fit_prompts", "fitted_text"]

# vLLM's gen_prompt_decode_to_target_len retries; a decode that re-encodes differently is re-cut this often.
FIT_RETRIES = 10


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
        ServerClientError: The server cannot tokenize (no ``/tokenize`` or ``/detokenize``, refused, unreachable).
    """
    count = -1
    for _ in range(FIT_RETRIES + 1):
        tokens = await tokenize(session, root, headers, model, text)
        count = len(tokens)
        if count <= target:
            return text, count
        text = await detokenize(session, root, headers, model, tokens[:target])
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
    except ServerClientError:
        return None
