"""Idefics3 and SmolVLM: the SigLIP-layout tower and the connector, counted as vLLM 0.32's idefics3.py builds them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.inspect_model import inspect_model
from engine.model.vision_params import quantizable_vision, vision_read, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild

TEXT_HIDDEN = 32
_VISION = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2}
_VISION |= {"image_size": 4, "patch_size": 2}
# A block: q/k/v/out 4 × (8×8 + 8) = 288, fc1 8×16 + 16 = 144, fc2 16×8 + 8 = 136, two LayerNorms 32: 600; 2 blocks
# 1,200. Patch Conv2d 3·2·2 = 12 → 8 with a bias 104, positions (4/2)² × 8 = 32, post_layernorm 16: tower 1,352.
TOWER = 1_352

CASES: list[tuple[dict[str, Any], int]] = [
    # The connector: scale_factor 2 shuffles 4 patches into 8 · 2² = 32 inputs, 32 × 32 bias-free = 1,024.
    ({"model_type": "idefics3", "vision_config": _VISION, "scale_factor": 2}, TOWER + 1_024),
    # ... Idefics3Config's default scale_factor is 2.
    ({"model_type": "idefics3", "vision_config": _VISION}, TOWER + 1_024),
    # SmolVLM-256M / 500M shuffle 4² = 16 patches: 8 · 16 = 128 inputs, 128 × 32 = 4,096.
    ({"model_type": "smolvlm", "vision_config": _VISION, "scale_factor": 4}, TOWER + 4_096),
    # Idefics3VisionConfig's defaults (1152 wide, 3072, 12 layers, 224 / 32): blocks of 4 × (1152² + 1,152) =
    # 5,313,024, fc1 1152×3072 + 3,072 = 3,542,016, fc2 3072×1152 + 1,152 = 3,540,096 and 4,608 of LayerNorms:
    # 12,399,744, × 12 = 148,796,928; patch 3·32² = 3,072 × 1,152 + 1,152 = 3,540,096; positions 7² × 1,152 =
    # 56,448; post_layernorm 2,304: 152,395,776. Connector 1,152 · 4 × 32 = 147,456. 152,543,232.
    ({"model_type": "idefics3", "vision_config": {}}, 152_543_232),
]


@pytest.mark.parametrize(("config", "expected"), CASES)
def test_idefics3_vision_parameters_as_vllm_builds_them(config: dict[str, Any], expected: int) -> None:
    shapes, vectors = vision_tower_shapes(config, TEXT_HIDDEN)
    assert sum(shape.numel for shape in shapes) + vectors == expected


@pytest.mark.parametrize("model_type", ["idefics3", "smolvlm"])
def test_tower_and_connector_are_built_with_the_quantization_config(model_type: str) -> None:
    """idefics3.py gives quant_config to vision_model and to the connector's ReplicatedLinear."""
    assert vision_read({"model_type": model_type})
    pairs = quantizable_vision(model_type) or ()
    assert ("vision.", "vision_model") in pairs and ("multi_modal_projector.", "connector") in pairs
    shapes, _ = vision_tower_shapes({"model_type": model_type, "vision_config": _VISION}, TEXT_HIDDEN)
    projection = [shape for shape in shapes if shape.module.startswith("multi_modal_projector.")]
    assert [(shape.in_features, shape.out_features) for shape in projection] == [(32, 32)]


def test_vllm_builds_the_same_tower_and_connector(vllm_meta_build: VllmMetaBuild) -> None:
    tower, connector, wide = vllm_meta_build.parameter_counts(
        [
            ("idefics3", _VISION, None),
            ("idefics3_connector", _VISION, (2, TEXT_HIDDEN)),
            ("idefics3", {}, None),
        ]
    )
    assert (tower, connector, wide) == (TOWER, 1_024, 152_395_776)


# SmolVLM2-500M's shape, as a public Core ML port checks a config against it (text 960 wide, 32 layers, 15 / 5
# heads × 64, MLP 2560, vocabulary 49,280; vision 768 wide, 12 layers, 512 / 16; scale_factor 4), untied.
SMOLVLM_500M = {
    "architectures": ["SmolVLMForConditionalGeneration"],
    "model_type": "smolvlm",
    "scale_factor": 4,
    "text_config": {
        "model_type": "llama",
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
        "head_dim": 64,
        "vocab_size": 49280,
        "tie_word_embeddings": False,
    },
    "vision_config": {"hidden_size": 768, "image_size": 512, "patch_size": 16, "num_hidden_layers": 12},
}


def test_a_smolvlm_checkpoint_counts_text_tower_and_connector(tmp_path: Path) -> None:
    """By hand. Text: 32 layers of q 960² + k/v 2 × 960×320 + o 960² + MLP 3 × 960×2560 + norms 1,920 = 9,832,320,
    314,634,240; embed_tokens and lm_head 2 × 49,280 × 960 = 94,617,600; norm 960: 409,252,800. Tower: 12 blocks of
    4 × (768² + 768) + (768×3072 + 3,072) + (3072×768 + 768) + 3,072 = 7,087,872, 85,054,464; patch 768·768 + 768 =
    590,592; positions 32² × 768 = 786,432; post_layernorm 1,536: 86,433,024. Connector 768 · 4² × 960 = 11,796,480.
    507,482,304 (the model is published as 500M)."""
    (tmp_path / "config.json").write_text(json.dumps(SMOLVLM_500M))
    model = inspect_model(tmp_path)
    assert (model.params, model.vision_params, model.vision_guessed) == (507_482_304, 98_229_504, False)
