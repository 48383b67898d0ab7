"""LFM2-VL's towers counted as vLLM's lfm2_vl.py builds them: by hand, against the card, and against vLLM's modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import read_architecture
from engine.model.param_count import estimate_params
from engine.model.vision_params import quantizable_vision, vision_read, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild

# SigLIP2 NaFlex base as LiquidAI/LFM2-VL-450M's card names it (86M; the published vision_config was not at hand:
# Siglip2VisionConfig's defaults, which are that tower's shape).
BASE: dict[str, Any] = {"model_type": "siglip2_vision_model"}
# The shape-optimized 400M tower of LFM2-VL-1.6B (1152 wide, 4304 MLP, 16 heads), 26 layers.
SO400M: dict[str, Any] = {
    "model_type": "siglip2_vision_model",
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 26,
    "num_attention_heads": 16,
}
TINY: dict[str, Any] = {
    "model_type": "siglip2_vision_model",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_patches": 16,
}

# vision config, top-level projector fields, text hidden size, tower + projector parameters
CASES = [
    # Base: 12 blocks of 4 · 768² + 4 · 768 (qkv, out_proj) + 2 · 768 · 3072 + 3072 + 768 (fc1, fc2) + 4 · 768
    # (two LayerNorms) = 7,087,872 → 85,054,464; patch embedding 768 · 768 + 768 = 590,592; 256 positions ·
    # 768 = 196,608; post_layernorm 1,536: 85,843,200 (card: 86M). Projector: LayerNorm over 4 · 768 = 3072
    # (6,144) + 3072 · 2560 + 2560 + 2560 · 1024 + 1024 = 10,495,488. 96,338,688.
    (BASE, {}, 1024, 96_338_688),
    # So400m, 26 blocks of 4 · 1152² + 4 · 1152 + 2 · 1152 · 4304 + 4304 + 1152 + 4 · 1152 = 15,239,504 →
    # 396,227,104; patch 768 · 1152 + 1152 = 885,888; positions 256 · 1152 = 294,912; post_layernorm 2,304:
    # 397,410,208. Projector: LayerNorm 2 · 4608 + 4608 · 2560 + 2560 + 2560 · 2048 + 2048 = 17,053,184.
    (SO400M, {}, 2048, 414_463_392),
    # Without the projector's LayerNorm and biases: 17,053,184 − 9,216 − 2,560 − 2,048 = 17,039,360.
    (SO400M, {"projector_use_layernorm": False, "projector_bias": False}, 2048, 414_449_568),
    # Tiny: 2 blocks of 4 · 4096 + 256 + 2 · 8192 + 128 + 64 + 256 = 33,472 → 66,944; patch 768 · 64 + 64 =
    # 49,216; 16 positions · 64 = 1,024; post_layernorm 128: 117,312. Projector (downsample 2, hidden 32):
    # LayerNorm 512 + 256 · 32 + 32 + 32 · 48 + 48 = 10,320. 127,632.
    (TINY, {"projector_hidden_size": 32}, 48, 127_632),
]


@pytest.mark.parametrize(("vision", "top", "text_hidden", "expected"), CASES)
def test_towers_by_hand(vision: dict[str, Any], top: dict[str, Any], text_hidden: int, expected: int) -> None:
    shapes, vectors = vision_tower_shapes(
        {"model_type": "lfm2_vl", "vision_config": vision, **top}, text_hidden
    )
    assert sum(shape.numel for shape in shapes) + vectors == expected


def test_vllm_builds_the_same_towers(vllm_meta_build: VllmMetaBuild) -> None:
    cases = [
        ("lfm2_vl", {k: v for k, v in vision.items() if k != "model_type"}, (top, text_hidden))
        for vision, top, text_hidden, _ in CASES
    ]
    assert vllm_meta_build.parameter_counts(cases) == [expected for *_, expected in CASES]


def test_the_tower_is_quantized_and_the_projector_is_not() -> None:
    for model_type in ("lfm2_vl", "lfm2-vl"):  # the remote-code configs' model type, and transformers'
        assert vision_read({"model_type": model_type, "vision_config": BASE})
        assert quantizable_vision(model_type) == (("vision.", "vision_tower"),)


def test_lfm2_vl_450m_total() -> None:
    """LFM2-350M's text model (card: 354,483,968) + the base tower and projector (96,338,688): 450,822,656,
    2 bytes each 901,645,312 B; the Hub lists LFM2-VL-450M's model.safetensors as 902 MB."""
    text = {
        "model_type": "lfm2",
        "architectures": ["Lfm2ForCausalLM"],
        "block_dim": 1024,
        "block_ff_dim": 6656,
        "conv_dim": 1024,
        "hidden_size": 1024,
        "num_attention_heads": 16,
        "num_hidden_layers": 16,
        "num_key_value_heads": 8,
        "full_attn_idxs": [2, 5, 8, 10, 12, 14],
        "vocab_size": 65_536,
    }
    config = {
        "architectures": ["Lfm2VlForConditionalGeneration"],
        "model_type": "lfm2-vl",
        "downsample_factor": 2,
        "projector_hidden_size": 2560,
        "projector_bias": True,
        "text_config": text,
        "vision_config": BASE,
    }
    counts = estimate_params(read_architecture(config, Path(".")))
    assert (counts.total, counts.vision) == (450_822_656, 96_338_688)
