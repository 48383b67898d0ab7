"""TP sizes a ModelOpt checkpoint's scale blocks can't be split at: dropped from the search, refused when asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.errors import ModelError, QuantTuiError
from engine.hardware.detect import target_from_spec
from engine.plan.fitting import tp_options
from engine.plan.recommender import PlanRequest, recommend
from engine.plan.tp_divisibility import MXFP8_BLOCK, scale_block_widths, tp_refusal
from tests.plan.model_configs import model_from_config, modelopt_mixed_layers


def _mxfp8(ignore: list[str]) -> dict[str, Any]:
    return {"quantization_config": {"quant_method": "modelopt", "quant_algo": "MXFP8", "ignore": ignore}}


def _modelopt(algo: str) -> dict[str, Any]:
    return {"quantization_config": {"quant_method": "modelopt", "quant_algo": algo, "ignore": ["lm_head"]}}


def _mixed(algos: list[str]) -> dict[str, Any]:
    layers = modelopt_mixed_layers(algos)
    return {
        "quantization_config": {
            "quant_method": "modelopt",
            "quant_algo": "MIXED_PRECISION",
            "quantized_layers": layers,
        }
    }


# (config, text changes, quantization, TP sizes an H100x8 keeps), worked by hand: vLLM 0.32 wants each rank's
# inputs to an MXFP8 layer in whole 32-wide scale blocks; row-parallel layers (o_proj, down_proj) hold input / TP.
TP_CASES = [
    # Llama-3.1-8B as published: down_proj 14336 / 8 = 1792 = 32 x 56, o_proj 32 x 128 = 4096 / 8 = 512.
    ("llama-3.1-8b", {}, _mxfp8(["lm_head"]), [1, 2, 4, 8]),
    # intermediate 14400: / 2 = 7200 = 32 x 225; / 4 = 3600 = 32 x 112.5 and / 8 = 1800 = 32 x 56.25 fail.
    ("llama-3.1-8b", {"intermediate_size": 14400}, _mxfp8(["lm_head"]), [1, 2]),
    # ... unless every layer's down_proj is excluded (16-bit, no scale blocks).
    ("llama-3.1-8b", {"intermediate_size": 14400}, _mxfp8(["lm_head", "*down_proj"]), [1, 2, 4, 8]),
    # ... excluding layer 0's alone leaves 31 quantized ones.
    (
        "llama-3.1-8b",
        {"intermediate_size": 14400},
        _mxfp8(["lm_head", "model.layers.0.mlp.down_proj"]),
        [1, 2],
    ),
    # head_dim 68: o_proj input 32 x 68 = 2176; / 4 = 544 = 32 x 17; / 8 = 272 = 32 x 8.5 fails.
    ("llama-3.1-8b", {"head_dim": 68}, _mxfp8(["lm_head"]), [1, 2, 4]),
    # Qwen3-30B-A3B experts 1344 wide: / 2 = 672 = 32 x 21; / 4 = 336 = 32 x 10.5 fails (FusedMoE per partition).
    ("qwen3-30b-a3b", {"moe_intermediate_size": 1344}, _mxfp8(["lm_head", "*mlp.gate"]), [1, 2]),
    # ... the experts excluded: only attention is MXFP8 (o_proj 4096 / 8 = 512).
    ("qwen3-30b-a3b", {"moe_intermediate_size": 1344}, _mxfp8(["lm_head", "*mlp.experts*"]), [1, 2, 4, 8]),
    # Not MXFP8: no scale block to split (ModelOpt FP8 per tensor), nor unquantized.
    (
        "llama-3.1-8b",
        {"intermediate_size": 14400},
        {"quantization_config": {"quant_method": "modelopt", "quant_algo": "FP8"}},
        [1, 2, 4, 8],
    ),
    ("llama-3.1-8b", {"intermediate_size": 14400}, {}, [1, 2, 4, 8]),
    # NVFP4 (KNvfp4Static, by 16) and MXFP8 on intermediate 14368 = 32 x 449: NVFP4 / 2 = 7184 = 16 x 449 builds,
    # / 4 = 3592 = 16 x 224.5 fails; MXFP8 / 2 = 7184 = 32 x 224.5 already fails.
    ("llama-3.1-8b", {"intermediate_size": 14368}, _modelopt("NVFP4"), [1, 2]),
    ("llama-3.1-8b", {"intermediate_size": 14368}, _modelopt("W4A16_NVFP4"), [1, 2]),
    ("llama-3.1-8b", {"intermediate_size": 14368}, _mxfp8(["lm_head"]), [1]),
    # FP8_PB_WO (KFp8Block128, by 128): head_dim 68, o_proj 2176 = 128 x 17; / 2 = 1088 = 128 x 8.5 fails.
    ("llama-3.1-8b", {"head_dim": 68}, _modelopt("FP8_PB_WO"), [1]),
    # ... and Llama-3.1-8B as published: 14336 / 8 = 1792 = 128 x 14, 4096 / 8 = 512 = 128 x 4.
    ("llama-3.1-8b", {}, _modelopt("FP8_PB_WO"), [1, 2, 4, 8]),
    # MIXED_PRECISION, 4 layers, intermediate 14400: each layer's down_proj by its own algo. MXFP8 in layers 2-3:
    # 3600 at TP 4 fails (as above); NVFP4 there: 3600 = 16 x 225 builds, 1800 = 16 x 112.5 at TP 8 fails;
    # FP8 everywhere: per-tensor scales, nothing to split.
    (
        "llama-3.1-8b",
        {"intermediate_size": 14400, "num_hidden_layers": 4},
        _mixed(["FP8", "FP8", "MXFP8", "MXFP8"]),
        [1, 2],
    ),
    (
        "llama-3.1-8b",
        {"intermediate_size": 14400, "num_hidden_layers": 4},
        _mixed(["FP8", "FP8", "NVFP4", "NVFP4"]),
        [1, 2, 4],
    ),
    ("llama-3.1-8b", {"intermediate_size": 14400, "num_hidden_layers": 4}, _mixed(["FP8"] * 4), [1, 2, 4, 8]),
]


@pytest.mark.parametrize(("name", "text_changes", "quant", "kept"), TP_CASES)
def test_tp_sizes_whose_inputs_per_rank_split_a_scale_block_are_dropped(
    tmp_path: Path, name: str, text_changes: dict[str, Any], quant: dict[str, Any], kept: list[int]
) -> None:
    model = model_from_config(tmp_path, name, quant, text_changes)
    assert tp_options(target_from_spec("H100x8"), model, scale_block_widths(model)) == kept


# Per-rank widths against vLLM 0.32's own checks (the schemes' create_weights): (scheme, per-rank inputs, builds),
# from the figures above.
VLLM_CASES = [
    ("KMxfp8Static", 7200, True),
    ("KMxfp8Static", 3600, False),
    ("KMxfp8Static", 544, True),
    ("KMxfp8Static", 272, False),
    ("KMxfp8Static", 672, True),
    ("KMxfp8Static", 336, False),
    ("KMxfp8Static", 7184, False),
    ("KNvfp4Static", 7184, True),
    ("KNvfp4Static", 3592, False),
    ("KNvfp4Static", 3600, True),
    ("KNvfp4Static", 1800, False),
    ("KFp8Block128", 2176, True),
    ("KFp8Block128", 1088, False),
]


@pytest.mark.parametrize(("scheme", "per_rank", "builds"), VLLM_CASES)
def test_vllms_modelopt_linears_agree_on_the_per_rank_widths(
    monkeypatch: pytest.MonkeyPatch, scheme: str, per_rank: int, builds: bool
) -> None:
    import torch
    from vllm.model_executor import parameter
    from vllm.model_executor.layers.quantization import modelopt

    # One rank of a TP group, as vLLM's worker would have set up before building the layer.
    monkeypatch.setattr(parameter, "get_tensor_model_parallel_rank", lambda: 0)
    monkeypatch.setattr(parameter, "get_tensor_model_parallel_world_size", lambda: 1)

    assert modelopt.MXFP8_BLOCK_SIZE == MXFP8_BLOCK
    shapes = modelopt.Shapes([4096], per_rank, torch.bfloat16)
    layer = torch.nn.Module()

    def build() -> None:
        getattr(modelopt, scheme)().create_weights(
            layer, modelopt.WEIGHT, modelopt.CkptCtx(group_size=16), shapes, lambda *a, **k: None
        )

    if builds:
        build()
        assert layer.weight.shape[0] == 4096
    else:
        with pytest.raises(ValueError, match=r"divisible|multiple of 16"):
            build()


def test_an_asked_tp_size_vllm_cannot_split_is_refused_in_one_line(tmp_path: Path) -> None:
    model = model_from_config(tmp_path, "llama-3.1-8b", _mxfp8(["lm_head"]), {"intermediate_size": 14400})
    request = PlanRequest(max_model_len=4096, tensor_parallel_size=4)
    with pytest.raises(QuantTuiError) as error:
        recommend(model, target_from_spec("H100x8"), request)
    message = str(error.value)
    assert "\n" not in message
    assert "mlp.down_proj has 14400 inputs, 3600 per rank at TP 4" in message
    assert error.value.fix == "use --tensor-parallel-size 1 or 2"


def test_the_search_says_which_tp_sizes_it_left_out(tmp_path: Path) -> None:
    model = model_from_config(tmp_path, "llama-3.1-8b", _mxfp8(["lm_head"]), {"intermediate_size": 14400})
    (candidate,) = recommend(model, target_from_spec("H100x8"), PlanRequest(max_model_len=4096)).candidates
    assert candidate.tensor_parallel_size in (1, 2)
    (reason,) = [r for r in candidate.reasons if "left out" in r]
    assert reason.startswith("tensor parallel 4 and 8 left out: ")
    assert "3600 per rank at TP 4" in reason


def test_an_mxfp8_checkpoint_no_tp_size_builds_is_refused_in_one_line(tmp_path: Path) -> None:
    # hidden 4112 = 32 x 128.5: q_proj, gate_up_proj (column-parallel, whole input on every rank) fail at TP 1.
    model = model_from_config(
        tmp_path, "llama-3.1-8b", _mxfp8(["lm_head"]), {"hidden_size": 4112, "head_dim": 128}
    )
    assert tp_refusal(scale_block_widths(model), 1) is not None
    with pytest.raises(ModelError) as error:
        recommend(model, target_from_spec("H100"), PlanRequest(max_model_len=4096))
    assert "\n" not in str(error.value)
    assert "has 4112 inputs on every rank" in str(error.value)
