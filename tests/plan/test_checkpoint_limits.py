"""An already-quantized checkpoint vLLM 0.32 cannot load anywhere is refused with vLLM's reason, not planned."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ModelError
from engine.hardware.detect import target_from_spec
from engine.plan.recommender import PlanRequest, recommend
from tests.plan.model_configs import published_config, write_config

ROUTERS = ["lm_head", "re:.*mlp.gate$"]  # llm-compressor's Qwen3-MoE examples leave the routers unquantized
QWEN3_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def _quant_config(weight_only: bool, ignore: list[str]) -> dict[str, Any]:
    """RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8's config; weight-only as llm-compressor's FP8 weight-only channel
    recipe writes it (no input_activations, per-channel weights, float-quantized)."""
    config = copy.deepcopy(published_config("llama-3.1-8b-instruct-fp8")["quantization_config"])
    config["ignore"] = ignore
    if weight_only:
        config["format"] = "float-quantized"
        config["config_groups"]["group_0"]["input_activations"] = None
        config["config_groups"]["group_0"]["weights"]["strategy"] = "channel"
    return config


def _checkpoint(folder: Path, name: str, quant: dict[str, Any], expert_tensors: bool) -> Path:
    """``name``'s published config with ``quant``; with ``expert_tensors``, a shard holding layer 0's first
    expert under llm-compressor's linearized names (what tells whether the config reaches the experts)."""
    write_config(folder, name, {"quantization_config": quant})
    if expert_tensors:
        import torch
        from safetensors.torch import save_file

        tensors = {
            f"model.layers.0.mlp.experts.0.{proj}.weight": torch.zeros(8, 8, dtype=torch.float8_e4m3fn)
            for proj in QWEN3_PROJECTIONS
        }
        save_file(tensors, str(folder / "model.safetensors"))
    return folder


NOTE = "if this checkpoint's routed experts are FP8 weight-only too, vLLM 0.32 has no fused-MoE method"
# (model, weight-only, ignore, expert tensors in the headers, GPU) -> the plan's method and execution, or
# None for a refusal; whether the "can't tell" note is there. The refusals are the configs vLLM 0.32's
# get_moe_method raises for (tests/plan/test_vllm_facts.py::test_fp8_weight_only_experts_do_not_load).
CASES = [
    ("qwen3-30b-a3b", True, ROUTERS, True, "H100", None, False),
    ("qwen3-30b-a3b", True, ROUTERS, True, "T4", None, False),
    ("qwen3-30b-a3b", True, ROUTERS, True, "cpu", None, False),  # refused for the experts before the CPU
    # Experts ignored: get_scheme_dict is None, UnquantizedFusedMoEMethod; the Linear layers are W8A16 FP8.
    (
        "qwen3-30b-a3b",
        True,
        [*ROUTERS, "re:.*mlp.experts.*"],
        True,
        "H100",
        ("fp8-w8a16", "weight-only"),
        False,
    ),
    # Config-only: nothing tells whether the experts are quantized, so the plan says what would happen.
    ("qwen3-30b-a3b", True, ROUTERS, False, "H100", ("fp8-w8a16", "weight-only"), True),
    # FP8 W8A8 experts load (CompressedTensorsW8A8Fp8MoEMethod); a dense FP8 weight-only model has no experts.
    ("qwen3-30b-a3b", False, ROUTERS, True, "H100", ("fp8", "w8a8"), False),
    ("llama-3.1-8b", True, ["lm_head"], False, "H100", ("fp8-w8a16", "weight-only"), False),
]


@pytest.mark.parametrize(("name", "weight_only", "ignore", "expert_tensors", "gpu", "planned", "note"), CASES)
def test_fp8_weight_only_moe_experts_are_refused(
    tmp_path: Path,
    name: str,
    weight_only: bool,
    ignore: list[str],
    expert_tensors: bool,
    gpu: str,
    planned: tuple[str, str] | None,
    note: bool,
) -> None:
    from engine.hardware.detect import HardwareTarget
    from engine.model.inspect_model import inspect_model

    model = inspect_model(
        _checkpoint(tmp_path / name, name, _quant_config(weight_only, ignore), expert_tensors)
    )
    target = (
        HardwareTarget(
            "cpu", "test CPU", 1, 64 * 1024**3, None, "catalogue", None, frozenset({"avx2", "avx512f"})
        )
        if gpu == "cpu"
        else target_from_spec(gpu)
    )
    request = PlanRequest(max_model_len=4096)
    if planned is None:
        with pytest.raises(ModelError) as refused:
            recommend(model, target, request)
        message = str(refused.value)
        assert "\n" not in message and "routed experts are FP8 weight-only" in message
        assert "For Fused MoE layers, only format: pack-quantized" in refused.value.cause
        assert "quant-tui quantize --method fp8" in refused.value.fix
        return
    recommendation = recommend(model, target, request)
    assert [(c.method, c.execution) for c in recommendation.candidates] == [planned]
    assert any(n.startswith(NOTE) for n in recommendation.notes) is note
