"""Ovis 2.5's visual tokenizer and visual embedding table counted as vLLM's ovis2_5.py builds them: by hand and
against vLLM's own VisualTokenizer and VisualEmbedding on meta."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import read_architecture
from engine.model.header_counts import classify_tensor
from engine.model.param_count import estimate_params
from engine.model.vision_params import has_towers, quantizable_vision, vision_read, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild
from tests.plan.model_configs import published_config

# The test's own: a Linear patch embedding with its own position table (num_patches 16), and a Conv2d one whose
# positions follow image_size.
TINY_VIT: dict[str, Any] = {
    "model_type": "siglip2_navit",
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "patch_size": 4,
    "num_channels": 3,
    "num_patches": 16,
    "preserve_original_pe": True,
    "hidden_stride": 2,
    "temporal_patch_size": 1,
    "hidden_act": "gelu_pytorch_tanh",
    "image_size": 16,
}
CONV_VIT = {**TINY_VIT, "num_patches": -1, "image_size": 32}

# vit config, visual vocabulary, text hidden size, parameters
CASES = [
    # 2 blocks of 4 · 64² + 2 · 64 · 96 = 28,672 and 4 · 64 + 96 + 64 + 4 · 64 = 672 → 58,688; patch 3 · 4² · 64 + 64
    # = 3136; 16 positions · 64 = 1024; post_layernorm 128; head 64 · 2² · (40 − 4 indicator tokens) = 9216 and its
    # LayerNorm 72; vte 40 · 32 = 1280. 73,544.
    (TINY_VIT, 40, 32, 73_544),
    # The Conv2d embedding: (32 / 4)² = 64 positions, 3072 more: 76,616.
    (CONV_VIT, 40, 32, 76_616),
]


@pytest.mark.parametrize(("vit", "vocabulary", "text_hidden", "params"), CASES)
def test_visual_tokenizer_and_vte_by_hand(
    vit: dict[str, Any], vocabulary: int, text_hidden: int, params: int
) -> None:
    config = {"model_type": "ovis2_5", "vit_config": vit, "visual_vocab_size": vocabulary}
    shapes, vectors = vision_tower_shapes(config, text_hidden)
    assert sum(shape.numel for shape in shapes) + vectors == params


def test_vllm_builds_the_same(vllm_meta_build: VllmMetaBuild) -> None:
    cases = [("ovis2_5", vit, (vocabulary, text_hidden)) for vit, vocabulary, text_hidden, _ in CASES]
    assert vllm_meta_build.parameter_counts(cases) == [params for *_, params in CASES]


def test_the_vit_is_quantized_and_the_head_is_not() -> None:
    assert quantizable_vision("ovis2_5") == (("vision.", "visual_tokenizer.vit"),)
    assert not vision_read({"model_type": "ovis2_5", "vit_config": {**TINY_VIT, "model_type": "aimv2"}})
    assert classify_tensor("visual_tokenizer.head.0.weight", [35, 256]) == "vision"
    assert classify_tensor("vte.weight", [40, 32]) == "vision"


def test_a_vit_config_is_a_tower() -> None:
    """Ovis's tower sits under vit_config, not vision_config: an Ovis tower quant-tui cannot read (Ovis 1 and 2's
    aimv2) is reported as guessed rather than left out silently."""
    assert has_towers({"model_type": "ovis", "vit_config": {**TINY_VIT, "model_type": "aimv2"}})


def test_ovis2_5_9b_is_its_checkpoint() -> None:
    """AIDC-AI/Ovis2.5-9B: the tower 27 SigLIP2 blocks of 1152 (15,239,504 each, 411,466,608), patch 3 · 16² · 1152 +
    1152 = 885,888, (512 / 16)² = 1024 positions · 1152 = 1,179,648 and post_layernorm 2304: 413,534,448; the head
    1152 · 2² · 65,532 = 301,971,456 and its LayerNorm 131,064; the vte 65,536 · 4096 = 268,435,456: 984,072,424.
    Qwen3-8B's text model (untied) 8,190,735,360. 9,174,807,784: the checkpoint's 18,349,615,568 bf16 bytes / 2."""
    counts = estimate_params(read_architecture(published_config("ovis2.5-9b"), Path(".")))
    assert (counts.total, counts.vision) == (9_174_807_784, 984_072_424)
