"""Quality through a served model: perplexity and top-1 next-token predictions from vLLM's prompt log-probs."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import QuantTuiError
from engine.serve import client as server_client

__all__ = [
    "QualityComparison",
    "QualityResult",
    "TextScore",
    "compare_quality",
    "measure_quality",
    "parse_prompt_logprobs",
]


@dataclass(frozen=True)
class TextScore:
    """One text as the model sees it, position by position from the second token (the first has no context).

    Attributes:
        tokens: the text's token ids.
        logprobs: the log-probability the model gave each of those tokens.
        top1: the token the model ranked first at each position.
    """

    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    top1: tuple[int, ...]


@dataclass(frozen=True)
class QualityResult:
    """A model's perplexity over held-out texts, with its per-position top-1 predictions.

    Attributes:
        model_name: the served model's name.
        perplexity: ``exp(-mean log-prob)`` over every scored position.
        positions: how many token positions were scored.
        texts: the per-text scores, in the order given.
    """

    model_name: str
    perplexity: float
    positions: int
    texts: tuple[TextScore, ...]


@dataclass(frozen=True)
class QualityComparison:
    """A candidate (e.g. quantized) model against a baseline on the same texts.

    Attributes:
        baseline_perplexity: the baseline's perplexity.
        candidate_perplexity: the candidate's perplexity.
        perplexity_delta: candidate minus baseline (positive: the candidate is worse).
        perplexity_ratio: candidate over baseline.
        top1_agreement: share (0..1) of positions where both rank the same token first.
        positions: how many positions were compared.
    """

    baseline_perplexity: float
    candidate_perplexity: float
    perplexity_delta: float
    perplexity_ratio: float
    top1_agreement: float
    positions: int

    @property
    def top1_agreement_percent(self) -> float:
        """Top-1 agreement in percent."""
        return 100.0 * self.top1_agreement


def parse_prompt_logprobs(entries: Sequence[dict[str, Any] | None]) -> TextScore:
    """Reads one choice's ``prompt_logprobs`` (requested with ``prompt_logprobs=1``).

    Each entry maps token ids (as strings) to ``{"logprob", "rank", "decoded_token"}``: the prompt's
    own token with its rank, plus the rank-1 token when that is a different one.

    Raises:
        QuantTuiError: the entries are not in that shape.
    """
    tokens: list[int] = []
    logprobs: list[float] = []
    top1: list[int] = []
    try:
        for entry in entries:
            if not entry:
                continue  # the first token has no context to predict it from
            ranked = {int(token): info for token, info in entry.items()}
            best = min(ranked, key=lambda token: int(ranked[token]["rank"]))
            # With two entries the prompt token is the one that is not rank 1.
            actual = next((token for token in ranked if token != best), best)
            tokens.append(actual)
            logprobs.append(float(ranked[actual]["logprob"]))
            top1.append(best)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise QuantTuiError(
            f"the server's prompt log-probs are not in the expected shape ({error})"
        ) from None
    return TextScore(tuple(tokens), tuple(logprobs), tuple(top1))


def _perplexity(scores: Sequence[TextScore]) -> tuple[float, int]:
    total = sum(sum(score.logprobs) for score in scores)
    positions = sum(len(score.tokens) for score in scores)
    if not positions:
        raise QuantTuiError("no token positions were scored; give longer held-out texts")
    # -inf log-probs (a token the model rules out) make the perplexity infinite, which is the truth.
    return math.exp(-total / positions) if math.isfinite(total) else math.inf, positions


def measure_quality(
    base_url: str,
    model_name: str,
    texts: Sequence[str],
    api_key: str | None = None,
    timeout_s: float = 300.0,
    cancel: threading.Event | None = None,
) -> QualityResult:
    """Scores held-out texts on a running vLLM server (``/v1/completions`` with ``prompt_logprobs``).

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``.
        model_name: the served model name.
        texts: held-out texts, each within the server's max model length.
        api_key: sent as a Bearer token when given.
        timeout_s: per-request timeout.
        cancel: stops between texts when set.

    Raises:
        QuantTuiError: no texts, the server refused or could not be reached, or it was cancelled.
    """
    import httpx

    if not texts:
        raise QuantTuiError("give at least one held-out text to measure quality on")
    headers = server_client.auth_headers(api_key)
    scores: list[TextScore] = []
    with httpx.Client(
        base_url=server_client.base_url(base_url), timeout=timeout_s, headers=headers
    ) as client:
        for text in texts:
            if cancel is not None and cancel.is_set():
                raise QuantTuiError("the quality check was cancelled")
            payload = {
                "model": model_name,
                "prompt": text,
                "max_tokens": 1,
                "temperature": 0,
                "prompt_logprobs": 1,
            }
            try:
                response = client.post("/v1/completions", json=payload)
            except httpx.HTTPError as error:
                raise QuantTuiError(
                    f"cannot reach the vLLM server at {base_url} ({type(error).__name__}); is it running?"
                ) from None
            if response.status_code != 200:
                raise QuantTuiError(
                    f"the server at {base_url} refused to score a text (HTTP {response.status_code}: "
                    f"{_error_message(response)})"
                )
            try:
                entries = response.json()["choices"][0]["prompt_logprobs"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise QuantTuiError(
                    f"the server at {base_url} sent no prompt log-probs; is it a vLLM server?"
                ) from None
            scores.append(parse_prompt_logprobs(entries or []))
    perplexity, positions = _perplexity(scores)
    return QualityResult(model_name, perplexity, positions, tuple(scores))


def _error_message(response: Any) -> str:
    try:
        body = response.json()
        message = body.get("error", {}).get("message") or body.get("message") or body
    except (ValueError, AttributeError):
        message = response.text
    return " ".join(str(message).split())[:200]


def compare_quality(baseline: QualityResult, candidate: QualityResult) -> QualityComparison:
    """How far a candidate moved from the baseline on the same texts.

    Raises:
        QuantTuiError: the two were measured on different texts or tokenizers.
    """
    if len(baseline.texts) != len(candidate.texts) or any(
        left.tokens != right.tokens for left, right in zip(baseline.texts, candidate.texts, strict=True)
    ):
        raise QuantTuiError(
            "the two models were scored on different tokens; compare models that share a tokenizer, "
            "on the same texts"
        )
    agree = sum(
        left == right
        for base, cand in zip(baseline.texts, candidate.texts, strict=True)
        for left, right in zip(base.top1, cand.top1, strict=True)
    )
    positions = baseline.positions
    if not positions:
        raise QuantTuiError("no token positions were scored; give longer held-out texts")
    return QualityComparison(
        baseline_perplexity=baseline.perplexity,
        candidate_perplexity=candidate.perplexity,
        perplexity_delta=candidate.perplexity - baseline.perplexity,
        perplexity_ratio=candidate.perplexity / baseline.perplexity if baseline.perplexity else math.inf,
        top1_agreement=agree / positions,
        positions=positions,
    )
