"""The quality check through a served engine: perplexity and top-1 next-token agreement from vLLM prompt log-probs."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import QuantTuiError
from engine.quantize.report import QualityFigures


@dataclass(frozen=True)
class ScoredText:
    """What a model thinks of one text, position by position (the first token has no prediction).

    Attributes:
        tokens: the text's token ids from the second token on.
        logprobs: the model's log-probability of each of those tokens given the ones before.
        top1: the model's most likely token at each of those positions.
    """

    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    top1: tuple[int, ...]


def heldout_samples(path: Path, samples: int = 8, words_per_sample: int = 120) -> list[str]:
    """Cuts a text file into ``samples`` consecutive pieces of about ``words_per_sample`` words.

    Raises:
        QuantTuiError: the file is missing or too short.
    """
    try:
        words = path.read_text(encoding="utf-8").split()
    except OSError as error:
        raise QuantTuiError(
            f"cannot read held-out text {path} ({error.strerror}); pass a readable text file"
        ) from None
    pieces = [" ".join(words[i : i + words_per_sample]) for i in range(0, len(words), words_per_sample)]
    pieces = [piece for piece in pieces if len(piece.split()) >= words_per_sample // 2][:samples]
    if not pieces:
        raise QuantTuiError(f"held-out text {path} is too short; give it at least {words_per_sample} words")
    return pieces


def parse_prompt_logprobs(entries: list[dict[str, dict[str, float]] | None]) -> ScoredText:
    """Reads vLLM's ``prompt_logprobs`` (``prompt_logprobs=1``): per position the prompt token and the top-1.

    Each entry maps token ids to ``{"logprob", "rank", ...}``; it holds one token when the prompt
    token is the top-1, else the prompt token and the rank-1 token.
    """
    tokens: list[int] = []
    logprobs: list[float] = []
    top1: list[int] = []
    for entry in entries:
        if not entry:
            continue  # the first token is not predicted
        ranked = {int(token): info for token, info in entry.items()}
        best = min(ranked, key=lambda token: ranked[token]["rank"])
        others = [token for token in ranked if token != best]
        actual = others[0] if others else best
        tokens.append(actual)
        logprobs.append(float(ranked[actual]["logprob"]))
        top1.append(best)
    return ScoredText(tuple(tokens), tuple(logprobs), tuple(top1))


def score_texts(
    base_url: str, model: str, texts: Iterable[str], timeout_s: float = 300.0
) -> list[ScoredText]:
    """Asks a vLLM OpenAI-compatible server for the prompt log-probs of each text.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        model: the served model name.
        texts: the held-out texts.

    Raises:
        QuantTuiError: the server refused or could not be reached.
    """
    import httpx

    scored = []
    with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
        for text in texts:
            payload = {
                "model": model,
                "prompt": text,
                "max_tokens": 1,
                "temperature": 0,
                "prompt_logprobs": 1,
            }
            try:
                response = client.post("/v1/completions", json=payload)
                response.raise_for_status()
            except httpx.HTTPError as error:
                raise QuantTuiError(
                    f"the vLLM server at {base_url} did not score the text ({error})"
                ) from None
            scored.append(parse_prompt_logprobs(response.json()["choices"][0]["prompt_logprobs"]))
    return scored


def compare(baseline: list[ScoredText], quantized: list[ScoredText]) -> QualityFigures:
    """Perplexity of each model and how often their top-1 predictions agree, over the same texts.

    Raises:
        QuantTuiError: the two runs did not tokenize the texts the same way.
    """
    total_base = total_quant = 0.0
    agree = positions = 0
    for base, quant in zip(baseline, quantized, strict=True):
        if base.tokens != quant.tokens:
            raise QuantTuiError(
                "the two models tokenized the held-out text differently; compare models that share a tokenizer"
            )
        total_base += sum(base.logprobs)
        total_quant += sum(quant.logprobs)
        agree += sum(left == right for left, right in zip(base.top1, quant.top1, strict=True))
        positions += len(base.tokens)
    if not positions:
        raise QuantTuiError("no token positions were scored; use a longer held-out text")
    return QualityFigures(
        baseline_perplexity=math.exp(-total_base / positions),
        quantized_perplexity=math.exp(-total_quant / positions),
        top1_agreement=agree / positions,
        tokens=positions,
    )


def measure_quality(
    baseline_url: str,
    baseline_model: str,
    quantized_url: str,
    quantized_model: str,
    texts: list[str],
    on_scored: Callable[[str], None] | None = None,
) -> QualityFigures:
    """Scores the texts on both servers and compares them (both servers must be up)."""
    baseline = score_texts(baseline_url, baseline_model, texts)
    if on_scored:
        on_scored("baseline")
    quantized = score_texts(quantized_url, quantized_model, texts)
    if on_scored:
        on_scored("quantized")
    return compare(baseline, quantized)
