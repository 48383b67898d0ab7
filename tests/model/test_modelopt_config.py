"""ModelOpt configs read as vLLM 0.32's modelopt.py reads them: both forms, exclusions, per-layer names."""

from __future__ import annotations

from typing import Any

import pytest

from engine.model.modelopt_config import (
    ModelOptConfig,
    decoder_module,
    is_excluded,
    names_one_matrix,
    read_modelopt,
)

LAYERS = {"model.layers.0.mlp.down_proj": {"quant_algo": "nvfp4", "group_size": 32}}

# ModelOptQuantConfigBase.from_config: the nested form's list is exclude_modules, the flat form's ignore (the other
# key is not read); ModelOptMixedPrecisionConfig._from_config takes group_size from the first NVFP4 layer.
READ_CASES = [
    (
        {"quantization": {"quant_algo": "mxfp8", "exclude_modules": ["lm_head"], "ignore": ["x"]}},
        ModelOptConfig("MXFP8", ("lm_head",)),
    ),
    (
        {"quant_algo": "MXFP8", "ignore": ["lm_head"], "exclude_modules": ["x"]},
        ModelOptConfig("MXFP8", ("lm_head",)),
    ),
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
