"""ModelOpt configs read as vLLM 0.32's modelopt.py reads them: both forms, exclusions, per-layer names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.model.modelopt_config import (
    ModelOptConfig,
    decoder_layer,
    decoder_module,
    is_excluded,
    names_one_matrix,
    read_modelopt,
)
from tests.plan.model_configs import model_from_config, modelopt_mixed_layers, modelopt_mixed_quant

LAYERS = {"model.layers.0.mlp.down_proj": {"quant_algo": "nvfp4", "group_size": 32}}

# ModelOptQuantConfigBase.from_config: the nested form's list is exclude_modules (ignore is not read), the flat
# form's ignore, or in vLLM 0.33 its exclude_modules when the key ignore is absent (an empty ignore still wins);
# ModelOptMixedPrecisionConfig._from_config takes group_size from the first NVFP4 layer.
READ_CASES = [
    (
        {"quantization": {"quant_algo": "mxfp8", "exclude_modules": ["lm_head"], "ignore": ["x"]}},
        ModelOptConfig("MXFP8", ("lm_head",)),
    ),
    (
        {"quant_algo": "MXFP8", "ignore": ["lm_head"], "exclude_modules": ["x"]},
        ModelOptConfig("MXFP8", ("lm_head",)),
    ),
    ({"quant_algo": "FP8", "exclude_modules": ["lm_head"]}, ModelOptConfig("FP8", ("lm_head",))),
    ({"quant_algo": "FP8", "ignore": [], "exclude_modules": ["lm_head"]}, ModelOptConfig("FP8")),
    ({"quantization": {"quant_algo": "FP8", "ignore": ["lm_head"]}}, ModelOptConfig("FP8")),
    (
        {"quant_algo": "MIXED_PRECISION", "quantized_layers": LAYERS},
        ModelOptConfig("MIXED_PRECISION", (), 32, (("model.layers.0.mlp.down_proj", "NVFP4"),)),
    ),
    ({}, ModelOptConfig("")),
]


@pytest.mark.parametrize(("quant_config", "expected"), READ_CASES)
def test_both_config_forms_are_read(quant_config: dict[str, Any], expected: ModelOptConfig) -> None:
    assert read_modelopt(quant_config) == expected


# ModelOptQuantConfigBase.is_layer_excluded: exact, contained (ModelOpt < 0.39), or fnmatch.
EXCLUDE_CASES = [
    ("lm_head", ("lm_head",), True),
    ("model.layers.3.mlp.gate", ("mlp.gate",), True),
    ("model.layers.3.self_attn.q_proj", ("model.layers.3.self_attn*",), True),
    ("model.layers.3.self_attn.q_proj", ("*.mlp.*",), False),
]


@pytest.mark.parametrize(("name", "patterns", "excluded"), EXCLUDE_CASES)
def test_exclusion_follows_vllm(name: str, patterns: tuple[str, ...], excluded: bool) -> None:
    assert is_excluded(name, patterns) is excluded


NAME_CASES = [
    ("model.layers.7.self_attn.q_proj", "self_attn.q_proj", True),
    ("model.layers.7.mlp.experts.12.gate_proj", "mlp.experts.gate_proj", True),
    ("model.language_model.layers.2.mlp.experts.0.down_proj", "mlp.experts.down_proj", True),
    ("model.layers.7.mlp.experts.gate_up_proj", "mlp.experts.gate_up_proj", False),  # fused: all experts
    ("model.layers.7.mlp.experts", "mlp.experts", False),
    ("language_model.lm_head", "lm_head", True),
    ("model.visual.blocks.0.attn.qkv", "model.visual.blocks.0.attn.qkv", True),  # not a decoder layer
]


@pytest.mark.parametrize(("name", "module", "one"), NAME_CASES)
def test_a_layer_name_maps_to_its_decoder_module(name: str, module: str, one: bool) -> None:
    assert (decoder_module(name), names_one_matrix(name)) == (module, one)


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("model.layers.7.self_attn.q_proj", 7),
        ("model.language_model.layers.12.mlp.experts.0.down_proj", 12),
        ("language_model.lm_head", None),
        ("model.visual.blocks.0.attn.qkv", None),
    ],
)
def test_a_layer_name_says_its_decoder_layer(name: str, layer: int | None) -> None:
    assert decoder_layer(name) == layer


# A 4-layer Llama-3.1-8B (h 4,096, 32 × 128 query heads, 8 KV heads, MLP 14,336) by hand, ModelOpt MIXED_PRECISION:
# layers 0-1 FP8, layers 2-3 NVFP4 (group 16), every q/k/v/o/gate/up/down listed. One layer's Linears:
#   q 4,096², k and v 1,024 × 4,096, o 4,096² = 41,943,040; gate, up, down 3 × 14,336 × 4,096 = 176,160,768
#   → 218,103,808 weights in 7 matrices; its two norms 2 × 4,096 × 2 B = 16,384 B.
#   FP8 (KFp8StaticTensor): 1 B a weight + a float32 weight_scale and input_scale a matrix (7 × 8 = 56)
#     → 218,103,808 + 56 + 16,384 = 218,120,248 B.
#   NVFP4 (KNvfp4Static + KNvfp4Dynamic): 4 bits = 109,051,904 B + an FP8 scale per 16 = 13,631,488 B
#     + weight_scale_2 and input_scale (7 × 8 = 56) → 109,051,904 + 13,631,488 + 56 + 16,384 = 122,699,832 B.
# (An average over the layers' mix had given each layer (218,120,248 + 122,699,832) / 2 = 170,410,040.)
FP8_LAYER, NVFP4_LAYER = 218_120_248, 122_699_832


@pytest.mark.parametrize(
    ("algos", "layer_bytes"),
    [
        (["FP8", "FP8", "NVFP4", "NVFP4"], (FP8_LAYER, FP8_LAYER, NVFP4_LAYER, NVFP4_LAYER)),
        (["NVFP4", "FP8", "NVFP4", "FP8"], (NVFP4_LAYER, FP8_LAYER, NVFP4_LAYER, FP8_LAYER)),
    ],
)
def test_a_mixed_checkpoints_layers_are_sized_by_their_own_algos(
    tmp_path: Path, algos: list[str], layer_bytes: tuple[int, ...]
) -> None:
    quant = modelopt_mixed_quant(modelopt_mixed_layers(algos))
    model = model_from_config(
        tmp_path, "llama-3.1-8b", {"quantization_config": quant}, {"num_hidden_layers": 4}
    )
    assert model.layer_bytes == layer_bytes
    # embed_tokens and the (unlisted) lm_head 128,256 × 4,096 × 2 B each, the final norm 8,192 B.
    assert model.loaded_weight_bytes == sum(layer_bytes) + 2 * 1_050_673_152 + 8_192
