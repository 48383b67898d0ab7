"""PaliGemma's SigLIP tower and projector counted as vLLM 0.32's paligemma.py builds them, and built by vLLM."""

from __future__ import annotations

from typing import Any

import pytest

from engine.model.vision_params import quantizable_vision, vision_read, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild

# google/paligemma2-3b-pt-224's vision_config, trimmed to the sizes: SigLIP-So400m at 224 px.
SO400M_224 = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
}
SO400M_224 |= {"image_size": 224, "patch_size": 14}
_TINY = {"hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2, "num_attention_heads": 2}
_TINY |= {"image_size": 4, "patch_size": 2}

CASES: list[tuple[dict[str, Any], int, int]] = [
    # Patch conv 3·2² = 12 → 8 with a bias: 104; positions (4/2)² × 8 = 32; 2 blocks of 532 (q/k/v/out 4 × 64 +
    # 32, fc1 8×12 + 12, fc2 12×8 + 8, two LayerNorms 32) = 1,064; post_layernorm 16 (the whole tower is built);
    # projector 8×20 + 20 = 180. 1,396.
    (_TINY, 20, 1_396),
    # PaliGemma 2 3B: patch 588×1152 + 1,152 = 678,528; positions 16² × 1,152 = 294,912; 27 blocks of 15,239,504
    # = 411,466,608; post_layernorm 2,304: 412,442,352. Projector into Gemma 2 2B's 2,304: 1152×2304 + 2,304 =
    # 2,656,512. 415,098,864.
    (SO400M_224, 2304, 415_098_864),
]


@pytest.mark.parametrize(("vision", "projection_dim", "expected"), CASES)
def test_paligemma_as_vllm_builds_it(vision: dict[str, Any], projection_dim: int, expected: int) -> None:
    config = {"model_type": "paligemma", "projection_dim": projection_dim, "vision_config": vision}
    shapes, vectors = vision_tower_shapes(config, projection_dim)
    assert sum(shape.numel for shape in shapes) + vectors == expected
    assert vision_read(config)


def test_vllm_builds_the_same_paligemma_towers(vllm_meta_build: VllmMetaBuild) -> None:
    counts = vllm_meta_build.parameter_counts(
        [("paligemma", vision, projection) for vision, projection, _ in CASES]
    )
    assert counts == [expected for *_, expected in CASES]


def test_only_the_siglip_tower_takes_the_quantization_config() -> None:
    # paligemma.py gives SiglipVisionModel quant_config; its projector is an nn.Linear.
    assert quantizable_vision("paligemma") == (("vision.", "vision_tower"),)
