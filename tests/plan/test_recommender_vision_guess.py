"""A vision tower quant-tui only guesses (a model type it has not read in vLLM) is said in the plan's warnings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.hardware.detect import target_from_spec
from engine.model.inspect_model import inspect_model
from engine.plan.recommender import PlanRequest, recommend
from tests.plan.model_configs import model_from_config

CASES = [
    ("llava-mistral-7b", {}, False),  # llava.py read: CLIP to the feature layer, the LLaVA projector
    ("gemma-3-27b-it", {}, False),
    ("qwen2.5-vl-7b-instruct", {}, False),
    ("qwen3-8b", {}, False),  # no tower at all
    # The same CLIP tower under a model type whose vLLM file quant-tui has not read: a generic ViT guess, all 24
    # layers, 5 LayerNorm widths: 301,989,888 + patch 602,112 + 319,488 + positions 590,848 + 5,120 + the
    # LLaVA-style projector 20,979,712 = 324,487,168.
    ("llava-mistral-7b", {"model_type": "deepseek_vl_v2"}, True),
]


@pytest.mark.parametrize(("name", "changes", "guessed"), CASES)
def test_a_guessed_vision_tower_is_warned_about(
    tmp_path: Path, name: str, changes: dict[str, Any], guessed: bool
) -> None:
    model = model_from_config(tmp_path, name, changes)
    assert model.vision_guessed is guessed
    best = recommend(model, target_from_spec("H100"), PlanRequest(max_model_len=4096)).best
    warned = [w for w in best.warnings if "generic ViT" in w]
    assert len(warned) == int(guessed)
    if guessed:
        assert warned[0].startswith("the vision tower (324M) is estimated as a generic ViT")


def test_a_vision_config_without_a_width_is_said_to_be_left_out(tmp_path: Path) -> None:
    # An unread model type whose vision_config names its sizes otherwise (as Kimi-K2.5's vt_hidden_size did
    # before its tower was read): nothing to estimate from, so the plan says the tower is not in the weights.
    model = model_from_config(
        tmp_path, "llava-mistral-7b", {"model_type": "deepseek_vl_v2", "vision_config": {"width": None}}
    )
    assert (model.vision_guessed, model.vision_params) == (True, 0)
    best = recommend(model, target_from_spec("H100"), PlanRequest(max_model_len=4096)).best
    assert [w for w in best.warnings if "towers" in w] == [
        "the vision/audio towers are left out of the weights: quant-tui has not read this model type in vLLM "
        "and finds no vision width in its config to estimate them from"
    ]


def test_an_unread_omni_models_towers_under_its_thinker_config_are_warned_about(tmp_path: Path) -> None:
    # A thinker_config laid out as Qwen3-Omni's, under a model type quant-tui has not read.
    text = {"model_type": "qwen3_moe", "hidden_size": 64, "intermediate_size": 128}
    text |= {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256}
    thinker = {"text_config": text, "vision_config": {"depth": 2}, "audio_config": {"d_model": 8}}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "some_omni", "thinker_config": thinker}))
    model = inspect_model(tmp_path)
    assert (model.vision_guessed, model.vision_params) == (True, 0)
    best = recommend(model, target_from_spec("H100"), PlanRequest(max_model_len=4096)).best
    assert sum("towers are left out" in w for w in best.warnings) == 1
