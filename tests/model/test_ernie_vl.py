"""ERNIE-4.5-VL (``ernie4_5_moe_vl``) counted as vLLM's ernie45_vl.py and ernie45_vl_moe.py build it: by hand, and
the vision tower and resampler against vLLM's own modules on meta.

No published config.json of ERNIE-4.5-VL-28B-A3B-PT was at hand: ERNIE_VL_28B holds the sizes that ports' test
configs (lablup/mlxcel's, which say they match the 28B-A3B checkpoint) and transformers' converter read from it,
with the flat layout of Baidu's configs; the vision tower's are those mlxcel's detection test and the DFN config
class give.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import read_architecture
from engine.model.header_counts import classify_tensor
from engine.model.param_count import active_params, estimate_params
from engine.model.vision_params import quantizable_vision, vision_read, vision_tower_shapes
from tests.model.test_param_count_ernie4_5_moe import ERNIE_21B
from tests.model.vllm_meta_build import VllmMetaBuild

VISION_28B: dict[str, Any] = {
    "depth": 32,
    "embed_dim": 1280,
    "hidden_size": 1280,
    "num_heads": 16,
    "mlp_ratio": 4,
    "patch_size": 14,
    "in_channels": 3,
    "spatial_merge_size": 2,
}
RESAMPLER_28B = {
    "pixel_hidden_size": 1280,
    "spatial_conv_size": 2,
    "temporal_conv_size": 2,
    "use_temporal_conv": True,
}
# The text sizes are ERNIE-4.5-21B-A3B's; the expert settings come in (text, vision) pairs.
ERNIE_VL_28B: dict[str, Any] = {
    **{key: value for key, value in ERNIE_21B.items() if key != "num_nextn_predict_layers"},
    "architectures": ["Ernie4_5_VLMoeForConditionalGeneration"],
    "model_type": "ernie4_5_moe_vl",
    "moe_num_experts": [64, 64],
    "moe_intermediate_size": [1536, 512],
    "moe_layer_start_index": [1, 1],
    "moe_layer_end_index": [29, 28],
    **RESAMPLER_28B,
    "vision_config": VISION_28B,
}
# The test's own: a 3 × 3 spatial merge, no temporal conv.
TINY_VISION: dict[str, Any] = {**VISION_28B, "depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 2}
TINY_VISION |= {"mlp_ratio": 2, "patch_size": 4}
TINY_RESAMPLER = {
    "pixel_hidden_size": 32,
    "spatial_conv_size": 3,
    "temporal_conv_size": 2,
    "use_temporal_conv": False,
}

# vision config, resampler fields, text hidden size, tower + resampler parameters
TOWER_CASES = [
    # 28B: patch 3 · 14² · 1280 = 752,640; 32 blocks of 3 · 1280² + 1280² + 2 · 1280 · 5120 = 19,660,800 and biases
    # 3840 + 1280 + 5120 + 1280 + norms 4 · 1280 = 16,640 → 629,678,080; ln 2560: 630,433,280. Resampler over S =
    # 1280 · 2² = 5120: spatial 2 · (5120² + 5120) + LayerNorm 10,240 = 52,449,280; temporal (10,240 · 5120 + 5120)
    # + (5120² + 5120) + 10,240 = 78,663,680; mlp 5120 · 2560 + 2560 = 13,109,760; RMSNorm 2560: 144,225,280.
    (VISION_28B, RESAMPLER_28B, 2560, 630_433_280 + 144_225_280),
    # Tiny: patch 3 · 4² · 32 = 1536; 2 blocks of 32 · 96 + 96 + 32² + 32 + 32 · 64 + 64 + 64 · 32 + 32 + 4 · 32 =
    # 8544 → 17,088; ln 64: 18,688. Resampler over S = 32 · 3² = 288: 2 · (288² + 288) + 576 = 167,040; mlp 288 ·
    # 48 + 48 = 13,872; RMSNorm 48: 180,960. 199,648.
    (TINY_VISION, TINY_RESAMPLER, 48, 199_648),
]


@pytest.mark.parametrize(("vision", "resampler", "text_hidden", "params"), TOWER_CASES)
def test_tower_and_resampler_by_hand(
    vision: dict[str, Any], resampler: dict[str, Any], text_hidden: int, params: int
) -> None:
    config = {"model_type": "ernie4_5_moe_vl", "vision_config": vision, **resampler}
    shapes, vectors = vision_tower_shapes(config, text_hidden)
    assert sum(shape.numel for shape in shapes) + vectors == params


def test_vllm_builds_the_same_tower_and_resampler(vllm_meta_build: VllmMetaBuild) -> None:
    cases = [
        ("ernie_vl", vision, {**resampler, "hidden_size": text_hidden, "rms_norm_eps": 1e-5})
        for vision, resampler, text_hidden, _ in TOWER_CASES
    ]
    assert vllm_meta_build.parameter_counts(cases) == [params for *_, params in TOWER_CASES]


def test_the_whole_28b_model() -> None:
    """ERNIE-4.5-MoE's layers (tests/model/test_param_count_ernie4_5_moe.py's 21B-A3B: attention and norms
    440,545,280, the dense layer 0 94,371,840), each MoE layer 1-27 with 64 vision experts 512 wide beside the text
    ones: 754,974,720 + shared 23,592,960 + text router 163,840 + 64 · 3 · 2560 · 512 = 251,658,240 + vision router
    163,840 + the (2, 64) e_score_correction_bias 128 = 1,030,553,728, × 27 = 27,824,950,656; tied embedding
    264,765,440, norm 2560: text 28,624,635,776. With the tower and resampler (774,658,560): 29,399,294,336 (the
    card: 28B total).

    Active: less the vision part, the 58 routed text experts a token skips in 27 layers (58 · 3 · 2560 · 1536 · 27 =
    18,473,287,680) and every vision expert (27 · 251,658,240 = 6,794,772,480): 3,356,575,616 (the card: 3B).
    """
    arch = read_architecture(ERNIE_VL_28B, Path("."))
    assert arch.moe is not None
    assert (arch.moe.num_experts, arch.moe.expert_intermediate_size) == (64, 1536)
    assert arch.moe.moe_layers == tuple(range(1, 28))
    counts = estimate_params(arch)
    assert (counts.total, counts.vision) == (29_399_294_336, 774_658_560)
    assert active_params(arch) == 3_356_575_616


def test_the_tower_is_quantized_and_the_resampler_is_not() -> None:
    assert vision_read(ERNIE_VL_28B)
    assert quantizable_vision("ernie4_5_moe_vl") == (("vision.", "vision_model"),)
    assert classify_tensor("model.resampler_model.mlp.weight", [2560, 5120]) == "vision"
