"""LLaVA-NeXT-Video's tower and projector counted as vLLM 0.32's llava_next_video.py builds them."""

from __future__ import annotations

from engine.model.vision_params import quantizable_vision, vision_read, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild

# llava-hf/LLaVA-NeXT-Video-7B-hf's vision_config, trimmed to the sizes: CLIP ViT-L/14 at 336 px; Vicuna-7B's 4096.
CLIP_L_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
}
CLIP_L_336 |= {"image_size": 336, "patch_size": 14, "projection_dim": 768}
CONFIG = {"model_type": "llava_next_video", "vision_config": CLIP_L_336}
# The tower to its feature layer -2 (23 of 24 layers, no post_layernorm): 23 blocks of 12,596,224 = 289,713,152,
# patch 588×1024 = 602,112, class 1,024, positions 577 × 1,024 = 590,848, pre_layrnorm 2,048: 290,909,184.
TOWER = 290_909_184
# linear_1 1024×4096 + 4,096 and linear_2 4096² + 4,096 (nn.Linear, biased); no image_newline.
PROJECTOR = 20_979_712


def test_llava_next_video_as_vllm_builds_it() -> None:
    shapes, vectors = vision_tower_shapes(CONFIG, 4096)
    assert sum(shape.numel for shape in shapes) + vectors == TOWER + PROJECTOR
    assert vision_read(CONFIG)
    # The projector is nn.Linear: only the tower takes the quantization config.
    assert [shape.module for shape in shapes if shape.module.startswith("multi_modal_projector.")] == []
    assert quantizable_vision("llava_next_video") == (("vision.", "vision_tower"),)


def test_vllm_builds_the_same_tower(vllm_meta_build: VllmMetaBuild) -> None:
    fields = {key: value for key, value in CLIP_L_336.items() if key != "projection_dim"}
    assert vllm_meta_build.parameter_counts([("clip", fields, 23)]) == [TOWER]
