"""Layer error arithmetic, held-out samples, and the model card's sections."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine.bench.heldout_text import heldout_samples
from engine.bench.quality import QualityComparison
from engine.errors import QuantTuiError
from engine.quantize.report import error_summary, layer_error, update_quality, worst_first
from engine.quantize.request import LayerError


@pytest.mark.parametrize(
    ("weight_sq", "error_sq", "relative", "snr"),
    [
        (100.0, 1.0, 0.1, 20.0),
        (4.0, 0.04, 0.1, 20.0),
        (1.0, 0.0, 0.0, math.inf),
        (0.0, 0.0, 0.0, math.inf),
        (0.0, 1.0, math.inf, -math.inf),
    ],
)
def test_layer_error_from_sums_of_squares(
    weight_sq: float, error_sq: float, relative: float, snr: float
) -> None:
    error = layer_error("m", weight_sq, error_sq)
    assert error.relative_error == pytest.approx(relative)
    assert error.snr_db == pytest.approx(snr)


def test_worst_first_and_summary() -> None:
    errors = worst_first(
        [LayerError("a", 0.01, 40.0), LayerError("b", 0.1, 20.0), LayerError("c", 0.05, 26.0)]
    )
    assert [error.name for error in errors] == ["b", "c", "a"]
    assert error_summary(errors) == "median relative error 0.0500 (26.0 dB SNR); worst b 0.1000 (20.0 dB)"
    assert error_summary(()) == "no per-layer error measured"


def test_heldout_text_is_cut_into_word_samples(tmp_path: Path) -> None:
    text = tmp_path / "heldout.txt"
    text.write_text(" ".join(f"w{i}" for i in range(240)))
    samples = heldout_samples(text, samples=5, words_per_sample=100)
    assert [len(sample.split()) for sample in samples] == [100, 100]
    with pytest.raises(QuantTuiError, match="too short"):
        heldout_samples(text, words_per_sample=1000)
    with pytest.raises(QuantTuiError, match="cannot read"):
        heldout_samples(tmp_path / "missing.txt")


def test_quality_section_of_the_model_card_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(
        "# m\n\n## Quality\n\nNot measured yet.\n\n## Serving\n\nvllm serve m\n"
    )
    comparison = QualityComparison(
        baseline_perplexity=10.0,
        candidate_perplexity=10.5,
        perplexity_delta=0.5,
        perplexity_ratio=1.05,
        top1_agreement=0.93,
        positions=400,
    )
    assert update_quality(tmp_path, comparison)
    card = (tmp_path / "README.md").read_text()
    assert "Not measured" not in card
    assert "| 10.000 | 10.500 | +5.00 % | 93.0 % |" in card and "400 token positions" in card
    assert card.index("## Quality") < card.index("## Serving")


@pytest.mark.parametrize(
    "card",
    [None, "# Someone's model\n\nTrained on many things.\n", "# m\n\n## Evaluation\n\nppl 3.2\n"],
    ids=["no card", "a card without sections", "a card with other sections"],
)
def test_a_card_quant_tui_did_not_write_is_left_alone(tmp_path: Path, card: str | None) -> None:
    if card is not None:
        (tmp_path / "README.md").write_text(card)
    comparison = QualityComparison(10.0, 10.5, 0.5, 1.05, 0.93, 400)
    assert not update_quality(tmp_path, comparison)
    assert sorted(path.name for path in tmp_path.iterdir()) == ([] if card is None else ["README.md"])
    if card is not None:
        assert (tmp_path / "README.md").read_text() == card
