"""Kimi's MoonViT towers and projectors counted as vLLM 0.32 builds them, and built by vLLM itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.vision_params import quantizable_vision, vision_read, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild

K25 = json.loads((Path(__file__).parents[1] / "fixtures/configs/kimi-k2.5.json").read_text())
# Kimi K3's published vision_config (its sizes under vt_*, KimiK3VisionConfig's defaults spelled out).
K3_VISION = {"vt_hidden_size": 1024, "vt_intermediate_size": 4096, "vt_num_attention_heads": 12}
K3_VISION |= {
    "vt_num_hidden_layers": 27,
    "qkv_hidden_size": 1536,
    "patch_size": 14,
    "merge_kernel_size": [2, 2],
}
K3_VISION |= {
    "init_pos_emb_height": 64,
    "init_pos_emb_width": 64,
    "init_pos_emb_time": 4,
    "norm_type": "rmsnorm",
}
K3_VISION |= {"attn_bias": False, "linear_bias": False, "patch_embed_proj_bias": False}
K3_VISION |= {"mm_projector_type": "patchmergerv2", "text_hidden_size": 7168}
# MoonViTConfig's defaults, the sizes of Kimi-VL-A3B's MoonViT.
KIMI_VL_VISION = {"hidden_size": 1152, "num_hidden_layers": 27, "intermediate_size": 4304, "patch_size": 14}
KIMI_VL_VISION |= {"num_attention_heads": 16, "init_pos_emb_height": 64, "init_pos_emb_width": 64}
KIMI_VL_VISION |= {"merge_kernel_size": [2, 2]}
_TINY = {
    "num_attention_heads": 2,
    "vt_num_attention_heads": 2,
    "patch_size": 2,
    "init_pos_emb_height": 4,
    "init_pos_emb_width": 4,
}
_TINY_SIZES = {"hidden_size": 8, "num_hidden_layers": 2, "intermediate_size": 12}

# model_type, vision_config, text hidden size, vision tower + projector parameters.
CASES: list[tuple[str, dict[str, Any], int, int]] = [
    # Patch conv 3·2² = 12 → 8 with a bias: 104; positions 4·4·8 = 128; 2 blocks of 532 (wqkv 8×24 + 24, wo 64 +
    # 8, fc0 8×12 + 12, fc1 12×8 + 8, two LayerNorms 32) = 1,064; final LayerNorm 16; projector over 2·2·8 = 32:
    # LayerNorm 16, linear_1 32² + 32, linear_2 32×32 + 32 = 2,128. 3,440.
    ("kimi_k25", _TINY | _TINY_SIZES, 32, 3_440),
    # K3's switches: no biases, RMSNorms, attention 16 wide. Conv 96, positions 128; 2 blocks of 720 (wqkv 8×48,
    # wo 16×8, fc0 96, fc1 96, two RMSNorms 16) = 1,440; final RMSNorm 8; patchmergerv2 32² + 32×32 and an
    # RMSNorm over the text width 32 = 2,080. 3,752.
    (
        "kimi_k3",
        _TINY | {f"vt_{key}": value for key, value in _TINY_SIZES.items()} | {"qkv_hidden_size": 16},
        32,
        3_752,
    ),
    # Kimi-VL's MoonViT as the K2.5 one (1,312 before the projector), merging 1×2 patches: LayerNorm 16, linear_1
    # 16² + 16, linear_2 16×32 + 32 = 832. 2,144.
    # Kimi-K2.5's config.json names its sizes vt_*, which Kimi_K25VisionConfig does not read: a vision_config with
    # only those builds the class's widths and depth (Kimi-K2.5's, below) with this patch and grid: conv 3·2²·1152
    # + 1,152 = 14,976, positions 16 × 1,152 = 18,432, 27 blocks 411,466,608, final LayerNorm 2,304; a projector
    # into 32 of 2,304 + 4608² + 4,608 + 4608×32 + 32 = 21,388,064. 432,890,384.
    ("kimi_k25", _TINY | {f"vt_{key}": value for key, value in _TINY_SIZES.items()}, 32, 432_890_384),
    ("kimi_vl", _TINY | _TINY_SIZES | {"merge_kernel_size": [1, 2]}, 32, 2_144),
    # Kimi-K2.5: patch conv 588×1152 + 1,152 = 678,528; positions 64·64·1152 = 4,718,592; 27 blocks of
    # 15,239,504 (wqkv 1152×3456 + 3,456, wo 1152² + 1,152, fc0 1152×4304 + 4,304, fc1 4304×1152 + 1,152, two
    # LayerNorms 4,608) = 411,466,608; final LayerNorm 2,304: 416,866,032. Projector: LayerNorm 2,304, linear_1
    # 4608² + 4,608, linear_2 4608×7168 + 7,168 = 54,277,888. 471,143,920, the sum of the checkpoint's own
    # vision_tower.* and mm_projector.* tensors.
    ("kimi_k25", K25["vision_config"], K25["text_config"]["hidden_size"], 471_143_920),
    # Kimi K3: conv 588×1024 = 602,112 (no bias); positions 4,194,304; 27 blocks of 14,682,112 (wqkv 1024×4608,
    # wo 1536×1024, fc0 and fc1 1024×4096, two RMSNorms 2,048) = 396,417,024; final RMSNorm 1,024: 401,214,464
    # (the card's "MoonViT-V2, 401M"). Projector 4096² + 4096×7168 + an RMSNorm 7,168 = 46,144,512. 447,358,976.
    ("kimi_k3", K3_VISION, 7168, 447_358_976),
    # Kimi-VL-A3B: the K2.5 tower (416,866,032) and a projector into 2,048: LayerNorm 2,304, 4608² + 4,608,
    # 4608×2048 + 2,048 = 30,679,808. 447,545,840.
    ("kimi_vl", KIMI_VL_VISION, 2048, 447_545_840),
]


@pytest.mark.parametrize(("model_type", "vision", "text_hidden", "expected"), CASES)
def test_moonvit_as_vllm_builds_it(
    model_type: str, vision: dict[str, Any], text_hidden: int, expected: int
) -> None:
    shapes, vectors = vision_tower_shapes({"model_type": model_type, "vision_config": vision}, text_hidden)
    assert sum(shape.numel for shape in shapes) + vectors == expected


@pytest.mark.parametrize(
    ("model_type", "text_hidden", "expected"),
    # Without a vision_config vLLM builds its class's defaults: Kimi-K2.5's sizes, K3's, Kimi-VL-A3B's (above).
    [("kimi_k25", 7168, 471_143_920), ("kimi_k3", 7168, 447_358_976), ("kimi_vl", 2048, 447_545_840)],
)
def test_a_kimi_config_without_vision_config_builds_the_default_tower(
    model_type: str, text_hidden: int, expected: int
) -> None:
    shapes, vectors = vision_tower_shapes({"model_type": model_type}, text_hidden)
    assert sum(shape.numel for shape in shapes) + vectors == expected
    assert vision_read({"model_type": model_type})


def test_kimi_towers_take_the_quantization_config_except_compressed_tensors() -> None:
    # kimi_vl.py builds both without quant_config; kimi_k25.py (and K3's model) with it unless it is
    # compressed-tensors (_maybe_ignore_quant_config), as in Kimi-K2.5's own INT4 checkpoint.
    assert quantizable_vision("kimi_vl") == ()
    assert quantizable_vision("kimi_k25", K25, "compressed-tensors") == ()
    built = (("vision.", "vision_tower"), ("multi_modal_projector.", "mm_projector"))
    assert quantizable_vision("kimi_k25", K25, "modelopt") == built
    assert quantizable_vision("kimi_k3", {}, "fp8") == built


def test_vllm_builds_the_same_moonvit(vllm_meta_build: VllmMetaBuild) -> None:
    def case(model_type: str, vision: dict[str, Any], text_hidden: int) -> tuple[str, dict[str, Any], Any]:
        fields = {key: value for key, value in vision.items() if key != "model_type"}
        if model_type == "kimi_vl":
            return ("kimi_vl", fields, text_hidden)
        return ("moonvit_3d", fields, [model_type, text_hidden])

    counts = vllm_meta_build.parameter_counts(
        [case(model_type, vision, hidden) for model_type, vision, hidden, _ in CASES]
    )
    assert counts == [expected for *_, expected in CASES]
