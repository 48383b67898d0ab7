"""Llama 4's vision model and projector counted as vLLM 0.32's mllama4.py builds them, and built by vLLM itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.vision_params import quantizable_vision, vision_read, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild

TEXT_HIDDEN = 32
# The adapter's fc1 reads intermediate_size (12), not hidden / ratio² (32): vLLM builds it from the former.
_TINY = {"hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 12}
_TINY |= {"num_channels": 3, "image_size": 4, "patch_size": 2, "projector_input_dim": 6}
_TINY |= {"projector_output_dim": 10, "vision_output_dim": 10, "multi_modal_projector_bias": False}
SCOUT = json.loads((Path(__file__).parents[1] / "fixtures/configs/llama-4-scout-17b-16e.json").read_text())

CASES = [
    # Unfold + bias-free Linear 3·2·2 = 12 → 8: 96. A block: qkv 8×24 + 24 = 216, o_proj 64 + 8 = 72, fc1
    # 8×12 + 12 = 108, fc2 12×8 + 8 = 104, two LayerNorms 32: 532, × 2 = 1,064. Class embedding 8, positions
    # ((4/2)² + 1) × 8 = 40, layernorm_pre and _post 32. Adapter fc1 12×6 = 72, fc2 6×10 = 60, no biases;
    # projector linear_1 10×32 = 320. 1,692.
    (_TINY, TEXT_HIDDEN, 1_692),
    # ... multi_modal_projector_bias: the adapter's fc1 and fc2 get 6 and 10: 1,708.
    (_TINY | {"multi_modal_projector_bias": True}, TEXT_HIDDEN, 1_708),
    # Llama-4-Scout's own: patch 588×1408 = 827,904; 34 blocks of 23,807,872 (qkv 1408×4224 + 4,224, o_proj
    # 1408² + 1,408, fc1 1408×5632 + 5,632, fc2 5632×1408 + 1,408, two LayerNorms 5,632) = 809,467,648;
    # class 1,408, positions 577 × 1,408 = 812,416, two LayerNorms 5,632; adapter 5632×4096 = 23,068,672 and
    # 4096² = 16,777,216: 850,960,896; projector 4096×5120 = 20,971,520. 871,932,416.
    (SCOUT["vision_config"], SCOUT["text_config"]["hidden_size"], 871_932_416),
]


@pytest.mark.parametrize(("vision", "text_hidden", "expected"), CASES)
def test_llama4_vision_as_vllm_builds_it(vision: dict[str, Any], text_hidden: int, expected: int) -> None:
    shapes, vectors = vision_tower_shapes({"model_type": "llama4", "vision_config": vision}, text_hidden)
    assert sum(shape.numel for shape in shapes) + vectors == expected


def test_llama4_towers_are_read_and_built_unquantized() -> None:
    # mllama4.py builds both the vision model and the projector with quant_config=None.
    assert vision_read({"model_type": "llama4", "vision_config": _TINY})
    assert quantizable_vision("llama4") == ()


def test_vllm_builds_the_same_llama4_vision(vllm_meta_build: VllmMetaBuild) -> None:
    fields = [{k: v for k, v in vision.items() if k != "model_type"} for vision, _, _ in CASES]
    counts = vllm_meta_build.parameter_counts(
        [("llama4", f, hidden) for f, (_, hidden, _) in zip(fields, CASES, strict=True)]
    )
    assert counts == [expected for _, _, expected in CASES]
