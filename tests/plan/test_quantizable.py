"""One rule says which models `quant-tui quantize` takes; the plan shows its refusal instead of a command that fails."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from engine.errors import ModelError
from engine.hardware.detect import target_from_spec
from engine.plan.quantizable import quantize_refusal
from engine.plan.recommender import PlanRequest, recommend
from engine.quantize.request import QuantizeRequest
from engine.quantize.tensor_plan import check_source
from tests.plan.model_configs import model_from_config

# (published config, the refusal's start; None: quant-tui quantizes it)
CASES: list[tuple[str, str | None]] = [
    ("llama-3.1-8b", None),
    ("qwen3-30b-a3b", None),
    ("nemotron-h-8b-base-8k", None),  # dense Nemotron-H
    (
        "gemma-3-27b-it",
        "cfg is a multimodal model (Gemma3ForConditionalGeneration); quant-tui quantizes text",
    ),
    (
        "deepseek-v3",
        "architecture DeepseekV3ForCausalLM (model_type deepseek_v3) is not supported for quant",
    ),
    ("nemotron-3-nano-30b-a3b", "cfg has Nemotron-H MoE layers, which quant-tui does not quantize yet"),
]


@pytest.mark.parametrize(("name", "refused"), CASES)
def test_the_plan_and_the_quantizer_refuse_the_same_models(
    tmp_path: Path, name: str, refused: str | None
) -> None:
    model = model_from_config(tmp_path / "cfg", name)
    refusal = quantize_refusal(model.name, model)
    assert refusal is None if refused is None else (refusal or "").startswith(refused)
    if refused is not None:  # the quantizer says the same line before it reads a weight
        request = QuantizeRequest(source=tmp_path / "cfg", method="fp8")
        with pytest.raises(ModelError, match=f"^{re.escape(refused)}"):
            check_source(request)


def test_a_refused_model_is_planned_without_a_quantize_command(tmp_path: Path) -> None:
    model = model_from_config(tmp_path / "cfg", "gemma-3-27b-it")
    best = recommend(model, target_from_spec("H100"), PlanRequest(max_model_len=4096)).best
    assert best.needs_quantization and best.quantize_command("cfg") is None
    assert best.quantize_refusal is not None and best.quantize_refusal.startswith("cfg is a multimodal model")
    assert [
        r for r in best.reasons if r.startswith("quant-tui cannot make this checkpoint (cfg is a multimodal")
    ]


def test_each_candidate_renders_the_one_quantize_command(tmp_path: Path) -> None:
    model = model_from_config(tmp_path / "cfg", "llama-3.1-8b")
    candidates = recommend(model, target_from_spec("H100"), PlanRequest(max_model_len=4096)).candidates
    commands = {c.method: c.quantize_command("my models/llama") for c in candidates}
    assert commands["bf16"] is None  # served as it is
    assert commands["fp8"] == "quant-tui quantize --model 'my models/llama' --method fp8"
    assert commands["w4a16"] == "quant-tui quantize --model 'my models/llama' --method w4a16"
    from tui.cli import build_parser

    for method, command in commands.items():
        if command is not None:
            assert build_parser().parse_args(shlex.split(command)[1:]).method == method
