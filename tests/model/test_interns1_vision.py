"""InternVL's transformers-format checkpoints (``internvl``) and Intern-S1 (``interns1``): the vision tower and
projector counted as vLLM's interns1.py builds them, by hand and against vLLM's own modules on meta.

VIT_300M and VIT_6B are InternViT-300M's and InternViT-6B's vision_config as OpenGVLab's conversion script to the
transformers format writes them (internvl_chat's custom2hf tool).
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.model.vision_params import quantizable_vision, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild

VIT_300M: dict[str, Any] = {
    "architectures": ["InternVisionModel"],
    "attention_bias": True,
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": 1024,
    "image_size": [448, 448],
    "initializer_factor": 0.1,
    "initializer_range": 1e-10,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-06,
    "layer_scale_init_value": 0.1,
    "model_type": "internvl_vision",
    "norm_type": "layer_norm",
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 24,
    "patch_size": [14, 14],
    "projection_dropout": 0.0,
    "torch_dtype": "bfloat16",
    "use_absolute_position_embeddings": True,
    "use_mask_token": False,
    "use_mean_pooling": True,
    "use_qk_norm": False,
}
# InternViT-6B's, as the same script writes it (Intern-S1's tower).
VIT_6B: dict[str, Any] = {
    **VIT_300M,
    "attention_bias": False,
    "hidden_size": 3200,
    "intermediate_size": 12800,
    "norm_type": "rms_norm",
    "num_attention_heads": 25,
    "num_hidden_layers": 45,
    "use_qk_norm": True,
}
# The test's own: the other branches (RMSNorms, q/k norms, a mask token, a final LayerNorm, a 56 × 28 image).
TINY: dict[str, Any] = {
    "model_type": "internvl_vision",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 96,
    "attention_bias": False,
    "use_qk_norm": True,
    "norm_type": "rms_norm",
    "image_size": [56, 28],
    "patch_size": [14, 14],
    "use_mask_token": True,
    "use_mean_pooling": False,
}

# vision config, downsample_ratio, text hidden size, tower parameters, projector parameters
CASES = [
    # InternViT-300M: 24 layers of 4 · 1024² + 2 · 1024 · 4096 = 12,582,912 and 3 · 1024 (q/k/v biases) + 1024 +
    # 4096 + 1024 + 2 · 2048 (LayerNorms) + 2 · 1024 (lambdas) = 15,360 → 302,358,528; patch 3 · 14² · 1024 + 1024
    # = 603,136, class token 1024, (32² + 1) · 1024 = 1,049,600 positions: 304,012,288 (InternViT-300M). The
    # projector into 3584: LayerNorm 2 · 4096 + 4096 · 3584 + 3584 + 3584² + 3584 = 27,540,480.
    (VIT_300M, 0.5, 3584, 304_012_288, 27_540_480),
    # InternViT-6B: 45 layers of 4 · 3200² + 2 · 3200 · 12,800 = 122,880,000 and q/k norms 6400 + 3200 + 12,800 +
    # 3200 + RMSNorms 6400 + lambdas 6400 = 38,400 → 5,531,328,000; patch 588 · 3200 + 3200 = 1,884,800, class token
    # 3200, 1025 · 3200 = 3,280,000 positions: 5,536,496,000 (Intern-S1's "6B vision encoder"). The projector into
    # 4096: 2 · 12,800 + 12,800 · 4096 + 4096 + 4096² + 4096 = 69,239,808.
    (VIT_6B, 0.5, 4096, 5_536_496_000, 69_239_808),
    # Tiny: 2 layers of 4 · 64² + 2 · 64 · 96 = 28,672 and q/k norms 128 + 64 + 96 + 64 + RMSNorms 128 + lambdas
    # 128 = 608 → 58,560; patch 3 · 14² · 64 + 64 = 37,696, class and mask tokens 128, (4 · 2 + 1) · 64 = 576:
    # 38,400; final LayerNorm 128: 97,088. Projector: 2 · 256 + 256 · 32 + 32 + 32² + 32 = 9792.
    (TINY, 0.5, 32, 97_088, 9_792),
]


@pytest.mark.parametrize(("vision", "ratio", "text_hidden", "tower", "projector"), CASES)
def test_tower_and_projector_by_hand(
    vision: dict[str, Any], ratio: float, text_hidden: int, tower: int, projector: int
) -> None:
    config = {"model_type": "internvl", "vision_config": vision, "downsample_ratio": ratio}
    shapes, vectors = vision_tower_shapes(config, text_hidden)
    assert sum(shape.numel for shape in shapes) + vectors == tower + projector


def test_vllm_builds_the_same_tower(vllm_meta_build: VllmMetaBuild) -> None:
    cases = [("interns1", vision, None) for vision, *_ in CASES]
    assert vllm_meta_build.parameter_counts(cases) == [tower for *_, tower, _projector in CASES]


def test_only_the_towers_mlp_is_quantized() -> None:
    assert quantizable_vision("internvl") == (("vision.mlp.", "vision_tower"),)
    assert quantizable_vision("interns1") == (("vision.mlp.", "vision_tower"),)
