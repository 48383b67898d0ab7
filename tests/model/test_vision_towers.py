"""Vision towers counted as vLLM 0.32 builds them: Qwen-VL, Pixtral, CLIP and SigLIP (LLaVA family, Gemma 3).

Every expectation is summed by hand from the modules of vLLM's qwen2_vl.py, qwen2_5_vl.py, qwen3_vl.py,
pixtral.py, mistral3.py, clip.py, siglip.py, llava*.py and gemma3_mm.py (arithmetic in the comments); the
real-checkpoint totals are in test_inspect_model_real_configs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.vision_params import quantizable_vision, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild

TEXT_HIDDEN = 32
_QWEN2_VL = {"embed_dim": 8, "hidden_size": 16, "mlp_ratio": 2, "depth": 2, "patch_size": 2}
_QWEN2_VL |= {"temporal_patch_size": 2, "in_channels": 3, "spatial_merge_size": 2}
_QWEN2_5_VL = {"hidden_size": 8, "out_hidden_size": 16, "intermediate_size": 12, "depth": 2, "patch_size": 2}
_QWEN2_5_VL |= {"temporal_patch_size": 2, "in_chans": 3, "spatial_merge_size": 2}
_QWEN3_VL = {"hidden_size": 8, "intermediate_size": 12, "out_hidden_size": 16, "depth": 2, "patch_size": 2}
_QWEN3_VL |= {
    "temporal_patch_size": 2,
    "in_channels": 3,
    "spatial_merge_size": 2,
    "num_position_embeddings": 4,
}
_PIXTRAL = {"model_type": "pixtral", "hidden_size": 8, "num_attention_heads": 2, "head_dim": 4}
_PIXTRAL |= {"intermediate_size": 16, "num_hidden_layers": 3, "patch_size": 2, "num_channels": 3}

_CLIP = {"model_type": "clip_vision_model", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 3}
_CLIP |= {"num_attention_heads": 2, "image_size": 4, "patch_size": 2, "num_channels": 3}
_SIGLIP = _CLIP | {"model_type": "siglip_vision_model"}

CASES = [
    # Qwen2-VL: Conv3d 3·2·2·2 = 24 → 8, no bias: 192. A block: qkv 8×24 + 24 = 216, proj 64 + 8 = 72,
    # fc1 8×16 + 16 = 144, fc2 16×8 + 8 = 136, two LayerNorms 2·(8 + 8) = 32: 600, × 2 = 1,200. Merger
    # (8·2² = 32 wide): ln_q 8 + 8, mlp.0 32×32 + 32 = 1,056, mlp.2 32×16 + 16 = 528: 1,600. 2,992.
    ({"model_type": "qwen2_vl", "vision_config": _QWEN2_VL}, 2_992),
    # Qwen2.5-VL: patch 192. A block: qkv 216, proj 72, gate_up 8×24 + 24 = 216, down 12×8 + 8 = 104, two
    # RMSNorms 16: 624, × 2 = 1,248. Merger: ln_q 8, mlp.0 1,056, mlp.2 528: 1,592. 3,032.
    ({"model_type": "qwen2_5_vl", "vision_config": _QWEN2_5_VL}, 3_032),
    # Qwen3-VL without deepstack: Conv3d 24 → 8 with a bias: 200; position table 4 × 8 = 32. A block: qkv 216,
    # proj 72, linear_fc1 8×12 + 12 = 108, linear_fc2 12×8 + 8 = 104, two LayerNorms 32: 532, × 2 = 1,064.
    # Merger: LayerNorm 16, fc1 1,056, fc2 528: 1,600. 2,896.
    ({"model_type": "qwen3_vl", "vision_config": _QWEN3_VL | {"deepstack_visual_indexes": []}}, 2_896),
    # ... one deepstack merger (Qwen3-VL-MoE the same): its LayerNorm is over 32, 64 + 1,056 + 528 = 1,648. 4,544.
    ({"model_type": "qwen3_vl_moe", "vision_config": _QWEN3_VL | {"deepstack_visual_indexes": [0]}}, 4_544),
    # ... a vision_config without deepstack_visual_indexes: Qwen3VLVisionConfig's [8, 16, 24], 2,896 + 3 × 1,648.
    ({"model_type": "qwen3_vl", "vision_config": _QWEN3_VL}, 7_840),
    # Qwen3.5 and Qwen3.5-MoE (qwen3_5.py) build qwen3_vl.py's Qwen3_VisionTransformer; their vision config
    # classes have no deepstack: 2,896.
    ({"model_type": "qwen3_5", "vision_config": _QWEN3_VL}, 2_896),
    ({"model_type": "qwen3_5_moe", "vision_config": _QWEN3_VL | {"deepstack_visual_indexes": []}}, 2_896),
    # Mistral 3, feature layer -1 (all 3 layers): patch 3·2·2 = 12 → 8: 96, ln_pre 8. A layer: q/k/v 8×24 = 192,
    # o 8×8 = 64, gate_up 8×32 = 256, down 16×8 = 128, two RMSNorms 16: 656, × 3 = 1,968. Projector: norm 8,
    # merging_layer 32×8 = 256, linear_1 8×32 = 256, linear_2 32×32 = 1,024, no biases: 1,544. 3,616.
    ({"model_type": "mistral3", "vision_config": _PIXTRAL, "vision_feature_layer": -1}, 3_616),
    # ... transformers' default feature layer for Mistral 3 is -1 too.
    ({"model_type": "mistral3", "vision_config": _PIXTRAL}, 3_616),
    # ... feature layer -2: vLLM builds 3 - 2 + 1 = 2 layers, one fewer: 3,616 - 656 = 2,960.
    ({"model_type": "mistral3", "vision_config": _PIXTRAL, "vision_feature_layer": -2}, 2_960),
    # ... multimodal_projector_bias: linear_1 and linear_2 get 32 each: 3,680.
    ({"model_type": "mistral3", "vision_config": _PIXTRAL, "multimodal_projector_bias": True}, 3_680),
    # Pixtral in LLaVA form, LLaVA's default feature layer -2: 2 layers. Tower 96 + 8 + 2 × 656 = 1,416;
    # LLaVA projector with biases: 8×32 + 32 = 288, 32×32 + 32 = 1,056. 2,760.
    ({"model_type": "llava", "vision_config": _PIXTRAL}, 2_760),
    # CLIP in LLaVA (clip.py): a block is q/k/v/out 4 × 64 + 32 = 288, fc1 8×16 + 16 = 144, fc2 16×8 + 8 = 136,
    # two LayerNorms 32: 600. Embeddings: patch 3·2·2 = 12 → 8 without bias 96, class 8, positions
    # ((4/2)² + 1) × 8 = 40, pre_layrnorm 16: 160. LLaVA's default feature layer -2: 2 blocks, and no
    # post_layernorm (require_post_norm=False): 1,360. Projector with biases 288 + 1,056 = 1,344. 2,704.
    ({"model_type": "llava", "vision_config": _CLIP}, 2_704),
    # ... feature layer -1: all 3 blocks, still no post_layernorm: 3,304.
    ({"model_type": "llava", "vision_config": _CLIP, "vision_feature_layer": -1}, 3_304),
    # ... feature layers [1, -3]: the deepest is layer 1 (3 - 3 + 1 = 1): one block, 2,104.
    ({"model_type": "llava", "vision_config": _CLIP, "vision_feature_layer": [1, -3]}, 2_104),
    # ... multimodal_projector_bias False: 2,704 - 2 × 32 = 2,640.
    ({"model_type": "llava", "vision_config": _CLIP, "multimodal_projector_bias": False}, 2_640),
    # LLaVA-NeXT: LLaVA's tower and projector, plus image_newline (32): 2,736.
    ({"model_type": "llava_next", "vision_config": _CLIP}, 2_736),
    # LLaVA-OneVision, SigLIP (siglip.py): patch 96 with a bias 8, positions (4/2)² × 8 = 32, no class or
    # pre-norm: 136. Feature layer -1: 3 blocks (1,800), no post_layernorm. Projector 1,344, image_newline 32.
    # 3,312.
    ({"model_type": "llava_onevision", "vision_config": _SIGLIP}, 3_312),
    # Gemma 3 builds SigLIP whole: 1,800 + 136 + post_layernorm 16 = 1,952; mm_input_projection 8×32 = 256 and
    # mm_soft_emb_norm 8. 2,216.
    ({"model_type": "gemma3", "vision_config": _SIGLIP}, 2_216),
    # ... a Gemma 3 vision_config without model_type is Gemma3Config's SigLIP all the same.
    ({"model_type": "gemma3", "vision_config": _CLIP | {"model_type": None}}, 2_216),
    # A LLaVA vision_config that says nothing is CLIPVisionConfig's defaults: h 768, MLP 3,072, 12 layers,
    # image 224, patch 32. 11 blocks of 4 × 768² + 3,072 + 2 × 768 × 3,072 + 3,072 + 768 + 3,072 = 7,087,872
    # (77,966,592); patch 3·32² × 768 = 2,359,296, class 768, positions (7² + 1) × 768 = 38,400, pre_layrnorm
    # 1,536; projector 768×32 + 32 + 32×32 + 32 = 25,664. 80,392,256.
    ({"model_type": "llava", "vision_config": {"projection_dim": 768}}, 80_392_256),
]


@pytest.mark.parametrize(("config", "expected"), CASES)
def test_vision_parameters_as_vllm_builds_them(config: dict[str, Any], expected: int) -> None:
    shapes, vectors = vision_tower_shapes(config, TEXT_HIDDEN)
    assert sum(shape.numel for shape in shapes) + vectors == expected


def test_mistral3_patch_merger_is_never_a_quantizable_linear() -> None:
    """mistral3.py builds merging_layer as a plain nn.Linear: no quantization config reaches it."""
    shapes, _ = vision_tower_shapes({"model_type": "mistral3", "vision_config": _PIXTRAL}, TEXT_HIDDEN)
    assert not [shape for shape in shapes if "merg" in shape.module]
    assert {s.module for s in shapes if s.module.startswith("multi_modal_projector.")} == {
        "multi_modal_projector.linear_1",
        "multi_modal_projector.linear_2",
    }


def test_onevision_projector_is_never_a_quantizable_linear() -> None:
    """llava_onevision.py builds its projector of nn.Linear: no quantization config reaches it."""
    shapes, _ = vision_tower_shapes({"model_type": "llava_onevision", "vision_config": _SIGLIP}, TEXT_HIDDEN)
    assert not [shape for shape in shapes if shape.module.startswith("multi_modal_projector.")]


def _state_numel(module: Any) -> int:
    return sum(tensor.numel() for tensor in module.state_dict().values())


# transformers' own towers built to the depth vLLM builds (a second implementation of the same modules):
# (config, the depth, whether vLLM keeps post_layernorm). Projectors apart: LLaVA's is 2,704 - 1,360 = 1,344.
BUILT_CASES = [
    ({"model_type": "llava", "vision_config": _CLIP}, 2, False, 1_344),
    ({"model_type": "llava", "vision_config": _CLIP | {"image_size": 6}}, 2, False, 1_344),
    ({"model_type": "gemma3", "vision_config": _SIGLIP}, 3, True, 264),
]


@pytest.mark.parametrize(("config", "depth", "post_norm", "projector"), BUILT_CASES)
def test_transformers_builds_the_same_tower(
    config: dict[str, Any], depth: int, post_norm: bool, projector: int
) -> None:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    fields = {key: value for key, value in config["vision_config"].items() if key != "model_type"}
    fields["num_hidden_layers"] = depth
    clip = config["vision_config"]["model_type"] == "clip_vision_model"
    with torch.device("meta"):
        tower = (
            CLIPVisionModel(CLIPVisionConfig(**fields))
            if clip
            else SiglipVisionModel(SiglipVisionConfig(**fields, vision_use_head=False))
        )
    built = _state_numel(tower) - (0 if post_norm else 2 * int(fields["hidden_size"]))
    shapes, vectors = vision_tower_shapes(config, TEXT_HIDDEN)
    assert sum(shape.numel for shape in shapes) + vectors == built + projector


def test_qwen3_5_tower_is_built_quantized_with_its_merger() -> None:
    # qwen3_5.py gives the Qwen3_VisionTransformer ("visual", its merger inside) the quantization config.
    visual = (("vision.", "visual"), ("multi_modal_projector.", "visual"), ("vision_adapter.", "visual"))
    assert quantizable_vision("qwen3_5") == quantizable_vision("qwen3_5_moe") == visual


_CONFIGS = Path(__file__).parents[1] / "fixtures/configs"


def test_vllm_builds_the_same_qwen3_vl_towers(vllm_meta_build: VllmMetaBuild) -> None:
    """vLLM's own Qwen3_VisionTransformer on meta: the tiny towers above, and Qwen3.5-9B's and Qwen3-VL-8B's
    (their hand sums are in test_inspect_model_real_configs)."""
    tiny = _QWEN3_VL | {"num_heads": 2}  # heads do not change the count; vLLM wants them to divide the width
    configs = [
        ("qwen3_5", tiny),
        ("qwen3_vl", tiny),
        ("qwen3_vl", tiny | {"deepstack_visual_indexes": [0]}),
        ("qwen3_5", json.loads((_CONFIGS / "qwen3.5-9b.json").read_text())["vision_config"]),
        ("qwen3_vl", json.loads((_CONFIGS / "qwen3-vl-8b-instruct.json").read_text())["vision_config"]),
    ]
    cases = [("qwen3_vl", {k: v for k, v in c.items() if k != "model_type"}, kind) for kind, c in configs]
    assert vllm_meta_build.parameter_counts(cases) == [2_896, 7_840, 4_544, 456_010_480, 576_388_336]
