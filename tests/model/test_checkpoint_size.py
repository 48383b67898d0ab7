"""Config-only sizes of pre-quantized checkpoints, against sizes worked out by hand from the format's own rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.checkpoint_size import WeightBytes, checkpoint_bytes, weight_layout
from engine.model.inspect_model import inspect_model
from engine.model.linear_shape import LinearShape
from engine.model.param_count import ModelShapes
from tests.plan.model_configs import model_from_config, write_config

# The quantization_config transformers' BitsAndBytesConfig.to_dict writes (unsloth's
# Meta-Llama-3.1-8B-Instruct-bnb-4bit carries this one, double quantization on).
BNB_NF4_DOUBLE: dict[str, Any] = {
    "_load_in_4bit": True,
    "_load_in_8bit": False,
    "bnb_4bit_compute_dtype": "bfloat16",
    "bnb_4bit_quant_storage": "uint8",
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": True,
    "llm_int8_enable_fp32_cpu_offload": False,
    "llm_int8_has_fp16_weight": False,
    "llm_int8_skip_modules": None,
    "llm_int8_threshold": 6.0,
    "load_in_4bit": True,
    "load_in_8bit": False,
    "quant_method": "bitsandbytes",
}

# Llama-3.1-8B by hand: 224 Linear weights (32 layers x q, k, v, o, gate, up, down), 6,979,321,856 values
# at 4 bits = 3,489,660,928 B, one absmax per 64 = 109,051,904 of them; bf16 embed_tokens, lm_head and
# 65 norms = 2,101,878,784 B. Double quantization: the absmax in uint8 (109,051,904 B), an fp32 per 256
# of them (1,703,936 B), 224 x (64 B NF4 map + 1,024 B nested map) = 243,712 B. Without it: fp32 absmax
# 436,207,616 B and 224 x 64 B maps = 14,336 B.
CASES = [
    (BNB_NF4_DOUBLE, 3_489_660_928 + 109_051_904 + 1_703_936 + 243_712 + 2_101_878_784),
    (
        {**BNB_NF4_DOUBLE, "bnb_4bit_use_double_quant": False},
        3_489_660_928 + 436_207_616 + 14_336 + 2_101_878_784,
    ),
    # LLM.int8: int8 values and an fp32 SCB per output row (43,008 rows a layer).
    (
        {**BNB_NF4_DOUBLE, "load_in_4bit": False, "_load_in_4bit": False, "load_in_8bit": True},
        6_979_321_856 + 32 * 43_008 * 4 + 2_101_878_784,
    ),
]


@pytest.mark.parametrize(("quantization_config", "expected"), CASES)
def test_bitsandbytes_checkpoint_bytes(
    quantization_config: dict[str, Any], expected: int, tmp_path: Path
) -> None:
    model = model_from_config(tmp_path, "llama-3.1-8b", {"quantization_config": quantization_config})
    assert model.loaded_weight_bytes == expected


def test_double_quantization_is_within_the_issue_bar_of_the_published_size(tmp_path: Path) -> None:
    # unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit: the Hub lists model.safetensors at 5.7 GB.
    model = model_from_config(tmp_path, "llama-3.1-8b", {"quantization_config": BNB_NF4_DOUBLE})
    assert model.loaded_weight_bytes == pytest.approx(5.7e9, rel=0.03)


def _one_layer(*linears: LinearShape) -> ModelShapes:
    """Only these matrices: no embeddings, norms or vision tower."""
    return ModelShapes(linears, vector_params=0, embedding=0, vision_vector_params=0, mtp=0)


Q_PROJ = LinearShape("self_attn.q_proj", "attention", 4096, 4096, 1)

# One 4096x4096 linear per ModelOpt algo, from vLLM 0.32 modelopt.py's create_weights (the tensors on disk):
# (algo, value bytes, scale bytes).
ALGO_CASES = [
    # KMxfp8Static: e4m3 weight 4096*4096 B; a uint8 (E8M0) weight_scale per 32 inputs: 4096 x 128.
    ("MXFP8", 16_777_216, 524_288),
    # KFp8StaticTensor: float32 weight_scale and input_scale.
    ("FP8", 16_777_216, 8),
    # KFp8StaticChannel: a float32 weight_scale per output row.
    ("FP8_PER_CHANNEL_PER_TOKEN", 16_777_216, 4096 * 4),
    # KFp8Block128: float32 per 128x128 block, 32 x 32 of them.
    ("FP8_PB_WO", 16_777_216, 32 * 32 * 4),
    # KNvfp4Static: two FP4 a byte; an FP8 scale per 16 inputs (4096 x 256), a float32 weight_scale_2, and
    # KNvfp4Dynamic's float32 input_scale (W4A4 only).
    ("NVFP4", 8_388_608, 1_048_576 + 8),
    ("W4A16_NVFP4", 8_388_608, 1_048_576 + 4),
]


@pytest.mark.parametrize(("algo", "values", "scales"), ALGO_CASES)
def test_a_modelopt_linear_is_sized_as_vllm_registers_its_tensors(
    algo: str, values: int, scales: int
) -> None:
    layout = weight_layout({"quantization_config": {"quant_method": "modelopt", "quant_algo": algo}})
    assert checkpoint_bytes(_one_layer(Q_PROJ), layout) == WeightBytes(values, scales, 0)


def _mixed(layers: dict[str, str], ignore: list[str] | None = None) -> dict[str, Any]:
    quantized = {name: {"quant_algo": algo} for name, algo in layers.items()}
    return {
        "quantization_config": {
            "quant_method": "modelopt",
            "quant_algo": "MIXED_PRECISION",
            "ignore": ignore or [],
            "quantized_layers": quantized,
        }
    }


# Two layers' q_proj (count 2) and one expert's fused gate_up_proj (4096 -> 2 x 1024), each checkpoint layer at
# its own algo (ModelOptMixedPrecisionConfig.get_quant_method), the rest 16-bit: (layers, ignore, values,
# scales, unquantized bytes).
Q0, Q1 = "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"
GATE0 = "model.layers.0.mlp.experts.0.gate_proj"
MIXED_CASES = [
    # FP8 layer 0: 16,777,216 + 8; NVFP4 layer 1: 8,388,608 + 1,048,584.
    ({Q0: "FP8", Q1: "NVFP4"}, [], 16_777_216 + 8_388_608, 8 + 1_048_584, 0),
    # Layer 1 excluded: its q_proj at bf16, 4096 x 4096 x 2 B.
    ({Q0: "FP8", Q1: "NVFP4"}, [Q1], 16_777_216, 8, 33_554_432),
    # Layer 1 missing from quantized_layers: unquantized too.
    ({Q0: "MXFP8"}, [], 16_777_216, 524_288, 33_554_432),
]


@pytest.mark.parametrize(("layers", "ignore", "values", "scales", "unquantized"), MIXED_CASES)
def test_mixed_precision_sizes_each_layer_by_its_own_algo(
    layers: dict[str, str], ignore: list[str], values: int, scales: int, unquantized: int
) -> None:
    layout = weight_layout(_mixed(layers, ignore))
    q_proj = LinearShape("self_attn.q_proj", "attention", 4096, 4096, 2)
    assert checkpoint_bytes(_one_layer(q_proj), layout) == WeightBytes(values, scales, unquantized)


def test_a_fused_expert_projection_takes_its_halves_algos() -> None:
    # gate_proj MXFP8 (1024 x 4096: 4,194,304 B + 1024 x 128 scales), up_proj not listed: 4,194,304 bf16 weights.
    layout = weight_layout(_mixed({GATE0: "MXFP8"}))
    gate_up = LinearShape("mlp.experts.gate_up_proj", "experts", 4096, 2048, 1)
    assert checkpoint_bytes(_one_layer(gate_up), layout) == WeightBytes(4_194_304, 131_072, 8_388_608)


# Two layers of two experts' fused gate_up_proj (4096 -> 2048), named other than one matrix a name: (names,
# values, scales). A fused-experts name (no expert number) stands for all of its layer's experts: 4 MXFP8 matrices
# of 8,388,608 B and 2048 x 128 scales. Mixtral's w1/w3 don't name the fused matrix: the part is quantized in its
# names' proportions, half NVFP4 (4,194,304 B, 2048 x 256 + 8 B of scales), half FP8 (8,388,608 B + 8 B).
FUSED_CASES = [
    (
        {
            "model.layers.0.mlp.experts.gate_up_proj": "MXFP8",
            "model.layers.1.mlp.experts.gate_up_proj": "MXFP8",
        },
        4 * 8_388_608,
        4 * 262_144,
    ),
    (
        {
            "model.layers.0.block_sparse_moe.experts.0.w1": "NVFP4",
            "model.layers.0.block_sparse_moe.experts.0.w3": "NVFP4",
            "model.layers.0.block_sparse_moe.experts.1.w1": "FP8",
            "model.layers.0.block_sparse_moe.experts.1.w3": "FP8",
        },
        2 * (4_194_304 + 8_388_608),
        2 * (524_296 + 8),
    ),
]


@pytest.mark.parametrize(("layers", "values", "scales"), FUSED_CASES)
def test_experts_named_otherwise_are_quantized_in_their_algos_proportions(
    layers: dict[str, str], values: int, scales: int
) -> None:
    gate_up = LinearShape("mlp.experts.gate_up_proj", "experts", 4096, 2048, 4)
    assert checkpoint_bytes(_one_layer(gate_up), weight_layout(_mixed(layers))) == WeightBytes(
        values, scales, 0
    )


# Llama-3.1-8B: 32 layers of q, o (4096 x 4096), k, v (1024 x 4096) = 41,943,040 attention weights and gate, up,
# down (14336 x 4096) = 176,160,768 MLP weights a layer; embed_tokens, lm_head and norms 2,101,878,784 B bf16.
LLAMA_REST = 2_101_878_784
LLAMA_LINEAR = 32 * (41_943_040 + 176_160_768)
# MXFP8: a byte per weight and a byte per 32 of them.
LLAMA_MXFP8 = LLAMA_LINEAR + LLAMA_LINEAR // 32 + LLAMA_REST
# Attention FP8 (2 float32 scales a matrix: 32 x 4 x 8 B), MLP NVFP4 (half a byte a weight, a byte per 16, and
# 8 B of global and input scale per matrix: 32 x 3 x 8 B).
LLAMA_MIXED = 32 * 41_943_040 + 1_024 + 32 * 176_160_768 // 2 + 32 * 176_160_768 // 16 + 768 + LLAMA_REST


def _llama_mixed_layers() -> dict[str, Any]:
    attention = ("q_proj", "k_proj", "v_proj", "o_proj")
    layers = {f"model.layers.{i}.self_attn.{p}": {"quant_algo": "FP8"} for i in range(32) for p in attention}
    mlp = ("gate_proj", "up_proj", "down_proj")
    layers |= {
        f"model.layers.{i}.mlp.{p}": {"quant_algo": "NVFP4", "group_size": 16} for i in range(32) for p in mlp
    }
    return layers


WHOLE_MODEL_CASES = [
    ("config.json", {"quant_method": "modelopt", "quant_algo": "MXFP8", "ignore": ["lm_head"]}, LLAMA_MXFP8),
    # A flat config that names its list exclude_modules (vLLM 0.33 reads it): attention stays bf16, 2 B a weight
    # where MXFP8 gives 1 + 1/32, so 32 x 41,943,040 = 1,342,177,280 weights add 1,342,177,280 - 41,943,040.
    (
        "config.json",
        {"quant_method": "modelopt", "quant_algo": "MXFP8", "exclude_modules": ["lm_head", "*self_attn*"]},
        LLAMA_MXFP8 + 1_300_234_240,
    ),
    (
        "hf_quant_config.json",
        {"quant_algo": "MXFP8", "kv_cache_quant_algo": None, "exclude_modules": ["lm_head"]},
        LLAMA_MXFP8,
    ),
    (
        "config.json",
        {
            "quant_method": "modelopt",
            "quant_algo": "MIXED_PRECISION",
            "quantized_layers": _llama_mixed_layers(),
        },
        LLAMA_MIXED,
    ),
    (
        "hf_quant_config.json",
        {
            "quant_algo": "MIXED_PRECISION",
            "exclude_modules": ["lm_head"],
            "quantized_layers": _llama_mixed_layers(),
        },
        LLAMA_MIXED,
    ),
]


@pytest.mark.parametrize(("file", "section", "expected"), WHOLE_MODEL_CASES)
def test_a_modelopt_llama_checkpoint_is_sized_from_its_config(
    tmp_path: Path, file: str, section: dict[str, Any], expected: int
) -> None:
    if file == "config.json":
        model = model_from_config(tmp_path, "llama-3.1-8b", {"quantization_config": section})
    else:
        folder = write_config(tmp_path, "llama-3.1-8b")
        (folder / file).write_text(json.dumps({"quantization": section}))
        model = inspect_model(folder)
    assert model.loaded_weight_bytes == expected
