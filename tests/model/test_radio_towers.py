"""Nemotron Nano VL v2's RADIO tower and mlp1 counted as vLLM's nano_nemotron_vl.py builds them: by hand and against
vLLM's own RadioModel.

The configs are constructed (no published Nemotron VL config.json is at hand): C-RADIO-H is vit_huge_patch16_224 with
vLLM's RadioConfig defaults (patch 16, cpe_max_size 2048) and three teachers with a class token each, as the
C-RADIO cards describe it; the projector widths are the test's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import read_architecture
from engine.model.param_count import estimate_params
from engine.model.vision_params import quantizable_vision, vision_read, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild
from tests.plan.model_configs import published_config

C_RADIO_H: dict[str, Any] = {
    "args": {
        "model": "vit_huge_patch16_224",
        "cpe_max_size": 2048,
        "register_multiple": 8,
        "teachers": [{"name": "siglip"}, {"name": "dino_v2"}, {"name": "sam"}],
        "cls_token_per_teacher": True,
    },
    "patch_size": 16,
}
TINY: dict[str, Any] = {
    "args": {
        "model": "vit_small_patch16_224",
        "cpe_max_size": 500,
        "register_multiple": 4,
        "teachers": [{"name": "a"}, {"name": "b"}],
        "cls_token_per_teacher": False,
        "qkv_bias": False,
    },
    "patch_size": 16,
    "video_temporal_patch_size": 2,
}

# vision config, top-level fields, text config, text hidden size, tower parameters, mlp1 parameters
CASES = [
    # C-RADIO-H, 32 blocks of 3 · 1280² + 1280² + 2 · 1280 · 5120 = 19,660,800 weights → 629,145,600, and
    # 3 · 1280 + 1280 + 5120 + 1280 (biases) + 4 · 1280 (norm1 / norm2) + 2 · 1280 (ls1 / ls2) = 19,200 vectors
    # → 614,400; embedder 768 · 1280 = 983,040; (2048 / 16)² = 16,384 positions · 1280 = 20,971,520; 3 class
    # tokens + (8 − 3) registers = 8 · 1280 = 10,240. 651,724,800. mlp1: the shuffled width 1280 · 2² = 5120
    # (its RMSNorm) + 5120 · 20,480 + 20,480 · 5120 = 209,720,320.
    (
        C_RADIO_H,
        {"vit_hidden_size": 1280, "projector_hidden_size": 20_480},
        {},
        5120,
        651_724_800,
        209_720_320,
    ),
    # Tiny: 12 blocks of 3 · 384² + 384² + 2 · 384 · 1536 = 1,769,472 → 21,233,664, and (no qkv bias) 384 + 1536
    # + 384 + 4 · 384 + 2 · 384 = 4,608 → 55,296; embedder 768 · 384 = 294,912 and video embedder 3 · 2 · 256 ·
    # 384 = 589,824; cpe round(500 / 16) · 16 = 496 → 31² = 961 positions · 384 = 369,024; 1 class token + (4 − 1)
    # registers = 4 · 384 = 1,536. 22,544,256. mlp1: 384 · 4 = 1536 + 1536 · 64 + 64 · 32 = 101,888, and with an
    # MTP layer the final LayerNorm 2 · 384: 102,656.
    (
        TINY,
        {"vit_hidden_size": 384, "projector_hidden_size": 64},
        {"num_nextn_predict_layers": 1},
        32,
        22_544_256,
        102_656,
    ),
    # Tiny with q/k RMSNorms: 12 · 2 · 384 = 9,216 more, 22,553,472.
    (
        {**TINY, "args": {**TINY["args"], "qk_normalization": True}},
        {"vit_hidden_size": 384, "projector_hidden_size": 64},
        {"num_nextn_predict_layers": 1},
        32,
        22_553_472,
        102_656,
    ),
    # Tiny with RMSNorms for norm1 / norm2: their biases, 12 · 2 · 384 = 9,216, fewer: 22,535,040.
    (
        {**TINY, "args": {**TINY["args"], "norm_type": "rms_norm"}},
        {"vit_hidden_size": 384, "projector_hidden_size": 64},
        {"num_nextn_predict_layers": 1},
        32,
        22_535_040,
        102_656,
    ),
]


@pytest.mark.parametrize(("vision", "top", "text", "text_hidden", "tower", "mlp1"), CASES)
def test_tower_and_mlp1_by_hand(
    vision: dict[str, Any], top: dict[str, Any], text: dict[str, Any], text_hidden: int, tower: int, mlp1: int
) -> None:
    config = {"model_type": "NemotronH_Nano_VL_V2", "vision_config": vision, "llm_config": text, **top}
    shapes, vectors = vision_tower_shapes(config, text_hidden)
    assert sum(shape.numel for shape in shapes) + vectors == tower + mlp1


def test_vllm_builds_the_same_tower(vllm_meta_build: VllmMetaBuild) -> None:
    cases = [
        ("radio", vision["args"], {key: value for key, value in vision.items() if key != "args"})
        for vision, *_ in CASES
    ]
    assert vllm_meta_build.parameter_counts(cases) == [tower for *_, tower, _mlp1 in CASES]


def test_nothing_of_the_vision_part_is_quantized() -> None:
    config = {
        "model_type": "NemotronH_Nano_VL_V2",
        "vision_config": C_RADIO_H,
        "projector_hidden_size": 20_480,
    }
    assert vision_read(config)
    assert quantizable_vision("NemotronH_Nano_VL_V2") == ()


@pytest.mark.parametrize(
    "config",
    # a timm name vLLM's RadioConfig does not map (a sound config vLLM cannot build: test_parakeet_encoder.py)
    [{"model_type": "NemotronH_Nano_VL_V2", "vision_config": {"args": {"model": "vit_giant_patch14"}}}],
)
def test_what_is_not_read_is_a_guess(config: dict[str, Any]) -> None:
    assert not vision_read(config)


def test_the_whole_model_is_its_text_model_and_vision_part() -> None:
    """NVIDIA-Nemotron-Nano-9B-v2's text model (8,888,227,328, tests/model/test_architecture_nemotron_h.py) under
    C-RADIO-H (651,724,800) and an mlp1 into its 4480 width: 5120 + 5120 · 20,480 + 20,480 · 4480 = 196,613,120."""
    config = {
        "architectures": ["NemotronH_Nano_VL_V2"],
        "model_type": "NemotronH_Nano_VL_V2",
        "downsample_ratio": 0.5,
        "vit_hidden_size": 1280,
        "projector_hidden_size": 20_480,
        "llm_config": published_config("nvidia-nemotron-nano-9b-v2"),
        "vision_config": C_RADIO_H,
    }
    counts = estimate_params(read_architecture(config, Path(".")))
    assert (counts.total, counts.vision) == (9_736_565_248, 848_337_920)
