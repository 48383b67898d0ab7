"""DeepSeek Sparse Attention models (DeepSeek-V3.2, GLM-5 ``glm_moe_dsa``) read config-only: indexer cache and weights.

Config: tests/fixtures/configs/deepseek-v3.2.json, deepseek-ai/DeepSeek-V3.2's config.json, copied
from a public model report on GitHub (found through the code search) that prints the file whole with
its safetensors weight list: 685,396,921,376 elements in 163 shards, of which the ``weight_scale_inv``
tensors are 41,591,584 (worked below). The indexer rules follow vllm/models/deepseek_v32/attention.py
(``DeepseekV32Attention``, ``DeepseekV32Indexer``); every figure is worked by hand in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import Architecture, read_architecture
from engine.model.param_count import decoder_layer_shapes, estimate_params, model_shapes

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"


def architecture(name: str, changes: dict[str, Any] | None = None) -> Architecture:
    config = json.loads((CONFIGS / f"{name}.json").read_text())
    config.update(changes or {})
    return read_architecture(config, CONFIGS)


# GLM-5.2's IndexCache (index_topk_freq 4, offset 3) over 78 layers: max(i − 3 + 1, 0) % 4 == 0 for
# i = 0, 1, 2 (max(..., 0) = 0) and i − 2 = 4k: 6, 10, ..., 74 (18 layers): 21 layers, as sglang's
# test_dsa_indexer_layer_resolver resolves them too ((0, 1, 2, 6) first, 74 last, 21 in all).
GLM52_LAYERS = (0, 1, 2, *range(6, 75, 4))
LAYER_RULES = [
    # id, config changes, layers with an indexer
    ("v3.2-every-layer", {}, tuple(range(61))),
    ("no-index_topk-is-dense-mla", {"index_topk": None}, ()),
    (
        "glm52-freq4-offset3",
        {"num_hidden_layers": 78, "index_topk_freq": 4, "index_skip_topk_offset": 3},
        GLM52_LAYERS,
    ),
    # Default offset 2, freq 2: max(i − 1, 0) % 2 == 0 → i = 0, 1, 3, 5 of 6.
    ("freq2-default-offset", {"num_hidden_layers": 6, "index_topk_freq": 2}, (0, 1, 3, 5)),
    # A pattern wins over the frequency: "S" skips; layers past its end keep theirs.
    ("pattern", {"num_hidden_layers": 6, "index_topk_pattern": "FSSF", "index_topk_freq": 4}, (0, 3, 4, 5)),
]


@pytest.mark.parametrize(
    ("changes", "layers"), [row[1:] for row in LAYER_RULES], ids=[row[0] for row in LAYER_RULES]
)
def test_indexer_layers_follow_vllm_skip_rule(changes: dict[str, Any], layers: tuple[int, ...]) -> None:
    attention = architecture("deepseek-v3.2", changes).attention
    assert attention.indexer_layers == layers
    # index_head_dim 128 fp8 bytes + 128 // 128 float32 scales × 4 B = 132 (0 without an indexer).
    assert attention.indexer_bytes_per_token == (132 if layers else 0)


DESCRIPTIONS = [
    ("deepseek-v3.2", {}, "MLA latent 576 (512 + 64 rope) + indexer 132 × 61 layers (+1 MTP, not loaded)"),
    ("deepseek-v3", {}, "MLA latent 576 (512 + 64 rope) × 61 layers (+1 MTP, not loaded)"),
    # A GLM-5-shaped DSA config: model_type glm_moe_dsa goes through the same MLA + indexer code.
    (
        "deepseek-v3.2",
        {
            "model_type": "glm_moe_dsa",
            "architectures": ["GlmMoeDsaForCausalLM"],
            "num_hidden_layers": 78,
            "index_topk_freq": 4,
            "index_skip_topk_offset": 3,
            "num_nextn_predict_layers": 0,
        },
        "MLA latent 576 (512 + 64 rope) + indexer 132 in 21 layers × 78 layers",
    ),
]


@pytest.mark.parametrize(("name", "changes", "text"), DESCRIPTIONS)
def test_description_names_the_indexer_cache(name: str, changes: dict[str, Any], text: str) -> None:
    assert architecture(name, changes).attention.description == text


# One indexer (hidden 7,168, q_lora_rank 1,536, index_n_heads 64, index_head_dim 128), shapes as the
# checkpoint's weight list shows them: wq_b [8192, 1536] 12,582,912 + wk [128, 7168] 917,504 +
# weights_proj [64, 7168] 458,752 + k_norm weight + bias 2 × 128 = 13,959,424.
INDEXER_PARAMS = 13_959_424


def test_param_count_adds_one_indexer_per_layer_and_mtp_layer() -> None:
    v32, v3 = architecture("deepseek-v3.2"), architecture("deepseek-v3")
    # Everything else equals DeepSeek-V3: 61 indexers in the main model, 1 in the MTP layer.
    assert estimate_params(v32).total - estimate_params(v3).total == 61 * INDEXER_PARAMS  # 851,524,864
    assert model_shapes(v32).mtp - model_shapes(v3).mtp == INDEXER_PARAMS
    # Only wq_b is a quantizable Linear: wk + weights_proj are vLLM's unquantized fused Linear.
    assert estimate_params(v32).linear - estimate_params(v3).linear == 61 * 12_582_912
    layer = decoder_layer_shapes(v32)[0]
    assert any(shape.module == "self_attn.indexer.wq_b" for shape in layer.linears)


def test_param_count_equals_the_checkpoint_weights() -> None:
    # The checkpoint's 685,396,921,376 elements less its float32 weight_scale_inv blocks (128 × 128):
    #   dense MLP, 3 layers: (56·144 + 144·56 + 144·56) × 3                     =      72,576
    #   attention, 62 layers: wk 1·56 + wq_b 64·12 + kv_a 5·56 + kv_b 256·4
    #     + o 56·128 + q_a 12·56 + q_b 192·12 = 12,272; × 62                     =     760,864
    #   routed experts, 59 layers × 256: 3 × 56·16 = 2,688; × 15,104             =  40,599,552
    #   shared experts, 59 layers: 2,688 × 59                                    =     158,592
    # = 41,591,584 scales, so 685,355,329,792 weights (MTP layer included); "685B" on the model card.
    arch = architecture("deepseek-v3.2")
    assert estimate_params(arch).total + model_shapes(arch).mtp == 685_396_921_376 - 41_591_584
