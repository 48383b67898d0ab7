"""TP sizes a block-FP8 checkpoint's 128×128 scale blocks can't be split at, worked by hand and checked against vLLM."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.errors import QuantTuiError
from engine.hardware.detect import target_from_spec
from engine.plan.fitting import tp_options
from engine.plan.fp8_block_split import Fp8BlockExperts, Fp8BlockLinear, OutputPart
from engine.plan.recommender import PlanRequest, recommend
from engine.plan.tp_divisibility import scale_block_widths, tp_refusal
from engine.quantize.config import quantization_config
from engine.quantize.schemes import SCHEMES
from tests.plan.model_configs import model_from_config

# DeepSeek-V3's and Qwen3-*-FP8's quantization_config: Fp8Config, lenient with merged layers and MoE blocks.
FP8_CONFIG = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
# What quant-tui's fp8-block writes (compressed-tensors FP8_BLOCK): strict.
CT_BLOCK = quantization_config(SCHEMES["fp8-block"], ["lm_head"])


def _quantized(config: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if config is None else {"quantization_config": config}


# (config, its quantization_config (None: as published), TP, whether vLLM 0.32 builds it), worked by hand.
CASES = [
    # Qwen3-30B-A3B: moe_intermediate 768 = 6 x 128. TP 2: 384 = 3 x 128 per rank, builds.
    ("qwen3-30b-a3b", CT_BLOCK, 2, True),
    # TP 4: 192 per rank = 1.5 blocks; compressed-tensors' W8A8 FP8 MoE checks it straight away.
    ("qwen3-30b-a3b", CT_BLOCK, 4, False),
    # Fp8Config refines to gcd(128, 128, 192, hidden 2048) = 64 >= 32: builds.
    ("qwen3-30b-a3b", FP8_CONFIG, 4, True),
    # TP 8: 96 per rank, gcd(128, 128, 96, 2048) = 32: still builds.
    ("qwen3-30b-a3b", FP8_CONFIG, 8, True),
    # TP 16: 48 per rank, gcd = 16 < 32: refused.
    ("qwen3-30b-a3b", FP8_CONFIG, 16, False),
    # DeepSeek-V3 at TP 8: q_b 24576/8 = 3072, kv_b 32768/8 = 4096, o_proj 16384/8 = 2048, dense down
    # 18432/8 = 2304 = 18 x 128, experts 2048/8 = 256: all whole blocks.
    ("deepseek-v3", None, 8, True),
    # TP 32: the dense layers' down_proj holds 18432/32 = 576 = 4.5 blocks (the experts' 64 would refine).
    ("deepseek-v3", None, 32, False),
    # Qwen2.5-0.5B (14 heads x 64, 2 KV heads): at TP 1 the fused qkv's q part is 896 = 7 x 128, k 128; builds.
    ("qwen2.5-0.5b", CT_BLOCK, 1, True),
    # TP 2: q 448 per rank = 3.5 blocks.
    ("qwen2.5-0.5b", CT_BLOCK, 2, False),
    # Fp8Config lets the fused qkv's 448 through (the mismatch allowance); o_proj 896/2 = 448 is row-parallel,
    # its inputs per rank 448 = 3.5 x 128: refused all the same.
    ("qwen2.5-0.5b", FP8_CONFIG, 2, False),
    # Llama-3.1-8B at TP 8: gate/up 14336/8 = 1792 = 14 x 128, q 512, k/v 1 head x 128, down 1792: builds.
    ("llama-3.1-8b", CT_BLOCK, 8, True),
    # Phi-4 (fused qkv_proj and gate_up_proj) at TP 2: gate/up 17920/2 = 8960 = 70 x 128, q 2560, k/v 5 x 128.
    ("phi-4", CT_BLOCK, 2, True),
]


@pytest.mark.parametrize(("name", "quant", "tp", "builds"), CASES)
def test_block_fp8_tp_sizes_match_the_hand_worked_table(
    tmp_path: Path, name: str, quant: dict[str, Any] | None, tp: int, builds: bool
) -> None:
    model = model_from_config(tmp_path, name, _quantized(quant))
    assert (tp_refusal(scale_block_widths(model), tp) is None) == builds


def test_a_16_bit_checkpoint_has_no_block_checks(tmp_path: Path) -> None:
    assert scale_block_widths(model_from_config(tmp_path, "qwen3-30b-a3b")) == ()


# (output partition sizes per rank, the whole output, input, input per rank, TP): vLLM's own check decides.
LINEAR_PARTITIONS = [
    ([448, 64, 64], 1152, 896, 896, 2),  # Qwen2.5-0.5B's qkv at TP 2: q 448 short
    ([896, 128, 128], 1152, 896, 896, 1),  # at TP 1: merged, the last part may be short
    ([256, 128, 128], 6144, 4096, 4096, 16),  # Llama-3.1-8B's qkv at TP 16: K/V one replicated head each
    ([4096], 4096, 14336, 1792, 8),  # Llama-3.1-8B's down_proj at TP 8
    ([2048], 2048, 18432, 576, 32),  # DeepSeek-V3's dense down_proj at TP 32
    ([8960, 8960], 35840, 5120, 5120, 2),  # Phi-4's gate_up at TP 2
    ([2240, 2240], 35840, 5120, 5120, 8),  # at TP 8: 17.5 blocks
]


def _as_quant_tui_sees_it(sizes: list[int], whole: int, width: int, per_rank: int, tp: int) -> Fp8BlockLinear:
    """The same layer as fp8_block_split describes it: the whole matrices and where TP splits them."""
    if per_rank != width:
        return Fp8BlockLinear("row", width, (OutputPart(whole),), "row", (128, 128), lenient=False)
    if len(sizes) == 3:  # q, k, v: K/V heads of 128, or 64 for Qwen2.5-0.5B
        head = 64 if whole == 1152 else 128
        q, kv = sizes[0] * tp, (whole - sizes[0] * tp) // 2
        parts = (OutputPart(q), OutputPart(kv, kv // head), OutputPart(kv, kv // head))
        return Fp8BlockLinear("qkv", width, parts, "column", (128, 128), lenient=False)
    parts = tuple(OutputPart(whole // len(sizes)) for _ in sizes)
    return Fp8BlockLinear("merged", width, parts, "column", (128, 128), lenient=False)


@pytest.mark.parametrize(("sizes", "whole", "width", "per_rank", "tp"), LINEAR_PARTITIONS)
def test_vllms_validate_fp8_block_shape_agrees(
    monkeypatch: pytest.MonkeyPatch, sizes: list[int], whole: int, width: int, per_rank: int, tp: int
) -> None:
    import vllm.distributed
    from vllm.model_executor.layers.quantization.utils.fp8_utils import validate_fp8_block_shape

    # Its getattr default asks the (absent) TP group even when the layer carries its tp_size.
    monkeypatch.setattr(vllm.distributed, "get_tensor_model_parallel_world_size", lambda: tp)

    layer = SimpleNamespace(tp_size=tp)  # what LinearBase sets; no mismatch allowance (compressed-tensors)
    try:
        validate_fp8_block_shape(layer, width, whole, per_rank, sizes, [128, 128])  # type: ignore[arg-type]
        vllm_builds = True
    except ValueError:
        vllm_builds = False
    assert (_as_quant_tui_sees_it(sizes, whole, width, per_rank, tp).refusal(tp) is None) == vllm_builds


# (experts' intermediate size, hidden, TP): Qwen3-30B-A3B at TP 2/4/8/16, DeepSeek-V3 at TP 8/32.
MOE_SPLITS = [
    (768, 2048, 2),
    (768, 2048, 4),
    (768, 2048, 8),
    (768, 2048, 16),
    (2048, 7168, 8),
    (2048, 7168, 32),
]


@pytest.mark.parametrize(("intermediate", "hidden", "tp"), MOE_SPLITS)
def test_vllms_moe_checks_agree(
    monkeypatch: pytest.MonkeyPatch, intermediate: int, hidden: int, tp: int
) -> None:
    import vllm.distributed
    from vllm.model_executor.layers.fused_moe.oracle.fp8 import refine_fp8_moe_block_shape
    from vllm.model_executor.layers.quantization.utils.fp8_utils import validate_fp8_block_shape_moe

    monkeypatch.setattr(vllm.distributed, "get_tensor_model_parallel_world_size", lambda: tp)
    share = intermediate // tp
    try:
        validate_fp8_block_shape_moe(share, [128, 128])
        strict_builds = True
    except ValueError:
        strict_builds = False
    config = SimpleNamespace(intermediate_size_per_partition=share, tp_size=tp, hidden_dim=hidden)
    # Fp8MoEMethod checks only when no refined grid was found (and passes when none is needed).
    lenient_builds = strict_builds or refine_fp8_moe_block_shape(config, [128, 128]) is not None  # type: ignore[arg-type]
    for lenient, builds in ((False, strict_builds), (True, lenient_builds)):
        experts = Fp8BlockExperts("mlp.experts", intermediate, hidden, (128, 128), lenient)
        assert (experts.refusal(tp) is None) == builds


def test_the_search_leaves_out_the_tp_sizes_the_experts_cannot_split_at(tmp_path: Path) -> None:
    model = model_from_config(tmp_path, "qwen3-30b-a3b", _quantized(CT_BLOCK))
    (candidate,) = recommend(
        model, target_from_spec("H100x8"), PlanRequest(max_model_len=32768, concurrency=512)
    ).candidates
    assert candidate.tensor_parallel_size == 2
    (reason,) = [r for r in candidate.reasons if "left out" in r]
    assert reason.startswith("tensor parallel 4 and 8 left out: ")
    assert "mlp.experts has 768, 192 per rank at TP 4" in reason
    assert "--enable-expert-parallel" in reason


def test_an_asked_tp_size_the_blocks_cannot_split_is_refused_in_one_line(tmp_path: Path) -> None:
    model = model_from_config(tmp_path, "qwen3-30b-a3b", _quantized(CT_BLOCK))
    with pytest.raises(QuantTuiError) as error:
        recommend(model, target_from_spec("H100x8"), PlanRequest(max_model_len=4096, tensor_parallel_size=8))
    assert "\n" not in str(error.value)
    assert "96 per rank at TP 8" in str(error.value)
    assert error.value.fix == "use --tensor-parallel-size 1 or 2"


def test_tp_sizes_that_do_not_split_the_kv_heads_are_not_offered(tmp_path: Path) -> None:
    # Phi-4: 40 query heads, 10 KV heads. TP 4 and 8 divide the 40 but not the 10 (and neither is a
    # multiple of 10 to replicate them): QKVParallelLinear's divide() asserts.
    model = model_from_config(tmp_path, "phi-4")
    assert tp_options(target_from_spec("H100x8"), model) == [1, 2]


@pytest.mark.parametrize(
    ("tp", "why"),
    [
        (
            4,
            "--tensor-parallel-size 4: vLLM splits the 10 KV heads evenly or copies them whole onto the ranks",
        ),
        (3, "--tensor-parallel-size 3: vLLM needs the 40 attention heads to divide evenly over the ranks"),
    ],
)
def test_an_asked_tp_size_that_does_not_split_the_heads_is_refused_in_one_line(
    tmp_path: Path, tp: int, why: str
) -> None:
    model = model_from_config(tmp_path, "phi-4")
    with pytest.raises(QuantTuiError) as error:
        recommend(model, target_from_spec("H100x8"), PlanRequest(max_model_len=4096, tensor_parallel_size=tp))
    assert str(error.value).startswith(why)
    assert error.value.fix == "use --tensor-parallel-size 1 or 2"


def _mixed_block_fp8_experts(layers: int, group_size: int | None) -> dict[str, Any]:
    recipe = {"quant_algo": "FP8_PB_WO"} | ({"group_size": group_size} if group_size else {})
    listed = {
        f"model.layers.{i}.mlp.experts.0.{name}": recipe
        for i in range(layers)
        for name in ("gate_proj", "down_proj")
    }
    return {
        "quantization_config": {
            "quant_method": "modelopt",
            "quant_algo": "MIXED_PRECISION",
            "quantized_layers": listed,
        }
    }


@pytest.mark.parametrize(
    ("group_size", "tp", "builds"), [(None, 4, True), (None, 8, True), (None, 16, False), (64, 16, False)]
)
def test_modelopt_mixed_block_fp8_experts_refine_as_fp8config_does(
    tmp_path: Path, group_size: int | None, tp: int, builds: bool
) -> None:
    # Qwen3-30B-A3B's experts (768, hidden 2048) under Fp8MoEMethod with Fp8Config([g, g]), g 128 by default:
    # TP 4 holds 192 per rank, refined to gcd(128, 128, 192, 2048) = 64; TP 8 96 -> 32; TP 16 48 -> 16 < 32.
    # g 64 at TP 16: 48 per rank, gcd(64, 64, 48, 2048) = 16: refused too.
    model = model_from_config(tmp_path, "qwen3-30b-a3b", _mixed_block_fp8_experts(48, group_size))
    assert (tp_refusal(scale_block_widths(model), tp) is None) == builds
