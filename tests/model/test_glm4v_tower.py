"""GLM-4.1V / GLM-4.5V: the vision tower as vLLM 0.32's glm4_1v.py builds it, and the text models it builds as GLM-4."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.inspect_model import inspect_model
from engine.model.vision_params import quantizable_vision, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild
from tests.plan.model_configs import published_config

_VISION = {"hidden_size": 8, "depth": 2, "intermediate_size": 24, "out_hidden_size": 16, "num_heads": 2}
_VISION |= {
    "patch_size": 2,
    "temporal_patch_size": 2,
    "in_channels": 3,
    "image_size": 4,
    "spatial_merge_size": 2,
}
# Patch Conv3d 3·2·2² = 24 → 8 with a bias 200, post_conv_layernorm 8, positions (4/2)² × 8 = 32. A block: qkv 8×24
# = 192, proj 64, gate_up 8 × 2·16 = 256 (the MLP is out_hidden_size wide), down 16×8 = 128, two RMSNorms 16: 656;
# 2 blocks 1,312. post_layernorm 8. downsample Conv2d 8·2² = 32 → 16 with a bias 528. Merger: proj 16² = 256,
# LayerNorm 32, gate_up 16 × 2·24 = 768, down 24×16 = 384: 1,440. 3,528.
TINY = 3_528
# Glm4vVisionConfig's defaults (1536 wide, 24 blocks, out 4096, intermediate 13,696, 336 / 14, 2 frames, merge 2):
# patch 1,176 × 1,536 + 1,536 = 1,807,872; post_conv_layernorm 1,536; positions 24² × 1,536 = 884,736; blocks of
# qkv 7,077,888 + proj 2,359,296 + gate_up 12,582,912 + down 6,291,456 + norms 3,072 = 28,314,624, × 24 =
# 679,550,976; post_layernorm 1,536; downsample 6,144 × 4,096 + 4,096 = 25,169,920; merger 4096² + 8,192 +
# 4096 × 27,392 + 13,696 × 4,096 = 185,081,856. 892,498,432.
DEFAULTS = 892_498_432


@pytest.mark.parametrize(
    ("model_type", "vision", "expected"),
    [("glm4v", _VISION, TINY), ("glm4v_moe", _VISION, TINY), ("glm4v", {}, DEFAULTS)],
)
def test_glm4v_vision_parameters_as_vllm_builds_them(
    model_type: str, vision: dict[str, Any], expected: int
) -> None:
    shapes, vectors = vision_tower_shapes({"model_type": model_type, "vision_config": vision}, 4096)
    assert sum(shape.numel for shape in shapes) + vectors == expected


def test_the_tower_and_its_merger_are_built_with_the_quantization_config() -> None:
    assert quantizable_vision("glm4v_moe") == (
        ("vision.", "visual"),
        ("multi_modal_projector.", "visual"),
        ("vision_adapter.", "visual"),
    )
    shapes, _ = vision_tower_shapes({"model_type": "glm4v", "vision_config": _VISION}, 4096)
    # The convolutions are not Linears: the patch embedding is the one conv shape, downsample is in the vectors.
    assert [shape.module for shape in shapes if "downsample" in shape.module] == []


def test_vllm_builds_the_same_tower(vllm_meta_build: VllmMetaBuild) -> None:
    assert vllm_meta_build.parameter_counts([("glm4v", _VISION, None), ("glm4v", {}, None)]) == [
        TINY,
        DEFAULTS,
    ]


# GLM-4.1V's text model (glm4v_text) is built as Glm4ForCausalLM: q/k/v biased (attention_bias), o_proj not, four
# RMSNorms a layer (input, post_self_attn, post_attention, post_mlp).
_GLM4V_TEXT = {
    "model_type": "glm4v_text",
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
_GLM4V_TEXT |= {"num_key_value_heads": 1, "head_dim": 8, "intermediate_size": 32, "vocab_size": 100}
_GLM4V_TEXT |= {"attention_bias": True, "tie_word_embeddings": False}


def test_glm4v_text_is_built_as_glm4(tmp_path: Path) -> None:
    """By hand: a layer of q 16² = 256, k and v 16×8 = 128 each, o 256, q/k/v biases 16 + 8 + 8 = 32, MLP 3 × 16×32
    = 1,536 and four norms 64: 2,400, × 2 = 4,800; embed_tokens and lm_head 2 × 100×16 = 3,200; norm 16: 8,016.
    With the tiny tower above: 11,544."""
    config = {"model_type": "glm4v", "text_config": _GLM4V_TEXT, "vision_config": _VISION}
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = inspect_model(tmp_path)
    assert (model.model_type, model.params, model.vision_params) == ("glm4", 11_544, TINY)


def test_glm4v_moe_text_is_built_as_glm4_moe(tmp_path: Path) -> None:
    """GLM-4.5V's text model (glm4v_moe_text) is GLM-4.5-Air's Glm4MoeForCausalLM: its parameters are the Air's
    106,852,251,264 (tests/model/test_param_count_glm4_moe.py) and its MTP layer is counted apart; with the
    default tower, 106,852,251,264 + 892,498,432 = 107,744,749,696."""
    text = published_config("glm-4.5-air") | {"model_type": "glm4v_moe_text"}
    config = {"model_type": "glm4v_moe", "text_config": text, "vision_config": {}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = inspect_model(tmp_path)
    assert (model.model_type, model.params, model.mtp_params) == ("glm4_moe", 107_744_749_696, 3_616_573_568)
    assert model.moe is not None and len(model.moe.moe_layers) == 45  # first_k_dense_replace 1 of 46
