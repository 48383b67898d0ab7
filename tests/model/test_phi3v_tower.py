"""Phi-3-Vision's image embedding counted as vLLM 0.32's phi3v.py builds it, and built by vLLM itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.inspect_model import inspect_model
from engine.model.vision_params import quantizable_vision, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild

# microsoft/Phi-3.5-vision-instruct's config.json, trimmed to the sizes (its published values).
PROCESSOR = {"image_dim_out": 1024, "model_name": "openai/clip-vit-large-patch14-336", "num_img_tokens": 144}
PHI3_5_VISION = {"architectures": ["Phi3VForCausalLM"], "model_type": "phi3_v", "hidden_size": 3072}
PHI3_5_VISION |= {"intermediate_size": 8192, "num_hidden_layers": 32, "num_attention_heads": 32}
PHI3_5_VISION |= {"num_key_value_heads": 32, "vocab_size": 32064, "tie_word_embeddings": False}
PHI3_5_VISION |= {"max_position_embeddings": 131072, "torch_dtype": "bfloat16", "img_processor": PROCESSOR}
PHI3_5_VISION |= {"embd_layer": {"use_hd_transform": True, "with_learnable_separator": True}}

# phi3v.py's CLIP ViT-L/14-336 whatever the config: blocks of 12,596,224 (q/k/v/out 4 × 1024² + 4,096, fc1
# 1024×4096 + 4,096, fc2 4096×1024 + 1,024, two LayerNorms 4,096); patch 588×1024 = 602,112, class 1,024,
# positions 577 × 1,024 = 590,848, pre_layrnorm 2,048: 1,196,032 besides the blocks.
CASES: list[tuple[dict[str, Any], int, int]] = [
    # layer_idx -2: 23 blocks, no post_layernorm: 289,713,152 + 1,196,032 = 290,909,184; glb_GN and sub_GN 2 ×
    # 4,096; img_projection 4096×3072 + 3,072 + 3072² + 3,072 = 22,026,240. 312,943,616.
    (PROCESSOR, 3072, 312_943_616),
    # layer_idx -1 (all 24 blocks and post_layernorm 2,048) into 64: 302,309,376 + 1,196,032 + 2,048 =
    # 303,507,456; separators 8,192; projection 4096×64 + 64 + 64² + 64 = 266,368. 303,782,016.
    (PROCESSOR | {"layer_idx": -1}, 64, 303_782_016),
    # layer_idx 1: phi3v.py builds layer_idx + 1 = 2 blocks (llava.py's rule would build 1): 25,192,448 +
    # 1,196,032 = 26,388,480; separators 8,192; projection 266,368. 26,663,040.
    (PROCESSOR | {"layer_idx": 1}, 64, 26_663_040),
]


@pytest.mark.parametrize(("processor", "text_hidden", "expected"), CASES)
def test_phi3v_image_embedding_as_vllm_builds_it(
    processor: dict[str, Any], text_hidden: int, expected: int
) -> None:
    shapes, vectors = vision_tower_shapes({"model_type": "phi3_v", "img_processor": processor}, text_hidden)
    assert sum(shape.numel for shape in shapes) + vectors == expected


def test_vllm_builds_the_same_image_embedding(vllm_meta_build: VllmMetaBuild) -> None:
    counts = vllm_meta_build.parameter_counts(
        [("phi3v", processor, hidden) for processor, hidden, _ in CASES]
    )
    assert counts == [expected for *_, expected in CASES]


def test_phi3_5_vision_is_phi3_mini_with_its_image_embedding(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(PHI3_5_VISION))
    model = inspect_model(tmp_path)
    # Phi-3-mini: 32 × (4 × 3072² + 3 × 3072×8192 + 6,144) + 2 × 32,064·3072 + 3,072 = 3,821,079,552; + the image
    # embedding 312,943,616 = 4,134,023,168 (the Hub: 4.15B, which counts the 24th CLIP block vLLM does not build).
    assert (model.params, model.vision_params, model.is_multimodal) == (4_134_023_168, 312_943_616, True)
    # The CLIP takes the quantization config; the projection is nn.Linear.
    assert quantizable_vision("phi3_v") == (("vision.", "vision_embed_tokens.img_processor"),)
