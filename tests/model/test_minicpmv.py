"""MiniCPM-V planned as vLLM 0.32's minicpmv.py builds each version, the tower checked against vLLM's own modules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.inspect_model import inspect_model
from engine.model.minicpmv import minicpmv_language_model_type, minicpmv_version
from engine.model.vision_params import quantizable_vision, vision_read, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild

# openbmb/MiniCPM-V-2_6's config.json, trimmed to the sizes (its published values): SigLIP-400M at 980 px, Qwen2-7B.
SIGLIP_400M = {"hidden_size": 1152, "image_size": 980, "intermediate_size": 4304, "model_type": "siglip"}
SIGLIP_400M |= {"num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14}
V2_6 = {"architectures": ["MiniCPMV"], "model_type": "minicpmv", "version": 2.6, "query_num": 64}
V2_6 |= {
    "drop_vision_last_layer": False,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
}
V2_6 |= {
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 151666,
    "tie_word_embeddings": False,
}
V2_6 |= {"max_position_embeddings": 32768, "torch_dtype": "bfloat16", "vision_config": SIGLIP_400M}
_TINY_VISION = {"hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2, "num_attention_heads": 2}
_TINY_VISION |= {"image_size": 4, "patch_size": 2}


@pytest.mark.parametrize(
    ("fields", "version", "language_model"),
    [
        ({"version": 2.6}, (2, 6), "qwen2"),
        ({"version": "4.5"}, (4, 5), "qwen3"),
        ({"version": 4.0}, (4, 0), "llama"),
        ({"hidden_size": 2304, "query_num": 64}, (2, 0), "minicpm"),  # old configs without a version
        ({"hidden_size": 4096, "query_num": 96}, (2, 5), "llama"),
        ({"version": 9.9}, (9, 9), "minicpmv"),  # a version vLLM 0.32 refuses: no family's rules
        ({"version": "beta"}, (), "minicpmv"),
    ],
)
def test_the_version_picks_the_language_model(
    fields: dict[str, Any], version: tuple[int, ...], language_model: str
) -> None:
    assert minicpmv_version(fields) == version
    assert minicpmv_language_model_type(fields) == language_model


CASES: list[tuple[dict[str, Any], int, int]] = [
    # Patch conv 3·2² = 12 → 8 with a bias: 104; positions (4/2)² × 8 = 32; 2 SigLIP blocks of 532 (q/k/v/out
    # 4 × 64 + 32, fc1 8×12 + 12, fc2 12×8 + 8, two LayerNorms 32) = 1,064; post_layernorm 16: 1,216. Resampler
    # into 128 (one head of 128) with 3 queries: queries 384, kv_proj 8×128 = 1,024, MultiheadAttention 3·128² +
    # 384 + 128² + 128 = 66,048, ln_q / ln_kv / ln_post 768, proj 128² = 16,384: 84,608. 85,824.
    ({"version": 2.6, "query_num": 3, "vision_config": _TINY_VISION}, 128, 85_824),
    # drop_vision_last_layer: one block fewer, 85,824 - 532 = 85,292.
    (
        {"version": 2.6, "query_num": 3, "drop_vision_last_layer": True, "vision_config": _TINY_VISION},
        128,
        85_292,
    ),
    # MiniCPM-V 2.6: patch 588×1152 + 1,152 = 678,528, positions 70² × 1,152 = 5,644,800, 27 blocks of 15,239,504
    # = 411,466,608, post_layernorm 2,304: 417,792,240. Resampler into 3,584: queries 64 × 3,584 = 229,376,
    # kv_proj 1152×3584 = 4,128,768, MultiheadAttention 3·3584² + 10,752 + 3584² + 3,584 = 51,394,560, three
    # LayerNorms 21,504, proj 3584² = 12,845,056: 68,619,264. 486,411,504.
    (V2_6, 3584, 486_411_504),
    # 2.5's resampler (the same class) with 96 queries into 4,096 and the last block dropped: tower 417,792,240 -
    # 15,239,504 = 402,552,736; resampler 393,216 + 4,718,592 + 3·4096² + 12,288 + 4096² + 4,096 + 24,576 + 4096²
    # = 89,038,848. 491,591,584.
    ({**V2_6, "version": 2.5, "query_num": 96, "drop_vision_last_layer": True}, 4096, 491_591_584),
]


@pytest.mark.parametrize(("config", "text_hidden", "expected"), CASES)
def test_tower_and_resampler_as_vllm_builds_them(
    config: dict[str, Any], text_hidden: int, expected: int
) -> None:
    shapes, vectors = vision_tower_shapes({**config, "model_type": "minicpmv"}, text_hidden)
    assert sum(shape.numel for shape in shapes) + vectors == expected
    assert vision_read({**config, "model_type": "minicpmv"})


def test_vllm_builds_the_same_tower_and_resampler(vllm_meta_build: VllmMetaBuild) -> None:
    cases = [
        (
            "minicpmv",
            {key: value for key, value in config["vision_config"].items() if key != "model_type"},
            [config["query_num"], hidden, bool(config.get("drop_vision_last_layer"))],
        )
        for config, hidden, _ in CASES
    ]
    assert vllm_meta_build.parameter_counts(cases) == [expected for *_, expected in CASES]


def test_minicpmv_2_0s_timm_tower_is_a_guess_and_the_others_are_built_quantized() -> None:
    assert not vision_read({**V2_6, "version": 2.0})
    # minicpmv.py gives vpm and the resampler (its kv_proj, the one Linear) the quantization config.
    assert quantizable_vision("minicpmv") == (
        ("vision.", "vpm"),
        ("multi_modal_projector.", "resampler"),
        ("vision_adapter.", "resampler"),
    )


def test_minicpmv_2_6_is_qwen2_7b_with_its_tower(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(V2_6))
    model = inspect_model(tmp_path)
    # Qwen2-7B's layers with q/k/v biases (28 × 233,057,792 = 6,525,618,176) + untied 2 × 151,666·3584 =
    # 1,087,141,888 + norm 3,584 + vision 486,411,504 = 8,099,175,152; the model card: 8B (Hub: 8.1B).
    assert (model.model_type, model.params, model.vision_params) == ("qwen2", 8_099_175_152, 486_411_504)
