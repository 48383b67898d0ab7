"""InternVL's InternViT tower and mlp1 projector, counted as vLLM 0.32's intern_vit.py and internvl.py build them."""

from __future__ import annotations

from typing import Any

import pytest

from engine.model.vision_params import quantizable_vision, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild

TEXT_HIDDEN = 32
# InternViT-300M style (InternVL 2.5 / 3): biased qkv, LayerNorms, no q/k norms.
_VIT_300M = {"model_type": "intern_vit_6b", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 3}
_VIT_300M |= {"image_size": 4, "patch_size": 2, "qkv_bias": True, "qk_normalization": False}
_VIT_300M |= {"norm_type": "layer_norm", "num_attention_heads": 2}
# InternViT-6B style: bias-free qkv, RMSNorms, q/k norms.
_VIT_6B = _VIT_300M | {"qkv_bias": False, "qk_normalization": True, "norm_type": "rms_norm"}

CASES = [
    # Embeddings: class token 8, patch Conv2d 3·2·2 = 12 → 8 with a bias 104, positions (2² + 1) × 8 = 40: 152.
    # A block: qkv 8×24 + 24 = 216, proj 64 + 8 = 72, fc1 8×16 + 16 = 144, fc2 16×8 + 8 = 136, two LayerNorms
    # 32, ls1 and ls2 16: 616; select_layer -1 builds all 3: 1,848. mlp1 over 8 · (1/0.5)² = 32: LayerNorm 64,
    # 32×32 + 32 = 1,056, 32×32 + 32 = 1,056: 2,176. 4,176.
    ({"vision_config": _VIT_300M, "select_layer": -1, "downsample_ratio": 0.5}, 4_176),
    # ... InternVLChatConfig's defaults are select_layer -1 and downsample_ratio 0.5.
    ({"vision_config": _VIT_300M}, 4_176),
    # ... select_layer -2: 3 - 2 + 1 = 2 blocks, 4,176 - 616 = 3,560.
    ({"vision_config": _VIT_300M, "select_layer": -2}, 3_560),
    # ... select_layer 0: the first block only (0 + 1), 4,176 - 2 × 616 = 2,944.
    ({"vision_config": _VIT_300M, "select_layer": 0}, 2_944),
    # InternViT-6B style block: qkv 192, proj 72, fc1 144, fc2 136, q/k RMSNorms 16, two RMSNorms 16, ls 16: 592.
    # 152 + 3 × 592 + 2,176 = 4,104.
    ({"vision_config": _VIT_6B}, 4_104),
]


@pytest.mark.parametrize(("config", "expected"), CASES)
def test_internvl_vision_parameters_as_vllm_builds_them(config: dict[str, Any], expected: int) -> None:
    shapes, vectors = vision_tower_shapes({"model_type": "internvl_chat"} | config, TEXT_HIDDEN)
    assert sum(shape.numel for shape in shapes) + vectors == expected


def test_mlp1_is_never_a_quantizable_linear() -> None:
    """internvl.py builds mlp1 of nn.Linear and gives vision_model the quantization config."""
    shapes, _ = vision_tower_shapes({"model_type": "internvl_chat", "vision_config": _VIT_300M}, TEXT_HIDDEN)
    assert {shape.module for shape in shapes if not shape.module.startswith("vision.")} == set()
    assert quantizable_vision("internvl_chat") == (("vision.", "vision_model"),)


# vLLM's own InternVisionModel to select_layer -1 and -2, and CLIPVisionModel as llava.py builds it (to layer -2,
# no post_layernorm).
_CLIP = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2}
_CLIP |= {"image_size": 4, "patch_size": 2}
# (builder, fields, layers vLLM builds), the config quant-tui sizes, and its projector's parameters (2,176: mlp1;
# 1,344: LLaVA's two biased projections, 8×32 + 32 and 32×32 + 32).
BUILT = [
    (("intern", _VIT_300M, 3), {"model_type": "internvl_chat", "vision_config": _VIT_300M}, 2_176),
    (
        ("intern", _VIT_6B, 2),
        {"model_type": "internvl_chat", "vision_config": _VIT_6B, "select_layer": -2},
        2_176,
    ),
    (
        ("clip", _CLIP, 2),
        {"model_type": "llava", "vision_config": _CLIP | {"model_type": "clip_vision_model"}},
        1_344,
    ),
]


def test_vllm_builds_the_same_towers(vllm_meta_build: VllmMetaBuild) -> None:
    built = vllm_meta_build.parameter_counts([case for case, _, _ in BUILT])
    for count, (_, config, projector) in zip(built, BUILT, strict=True):
        shapes, vectors = vision_tower_shapes(config, TEXT_HIDDEN)
        assert sum(shape.numel for shape in shapes) + vectors == count + projector
