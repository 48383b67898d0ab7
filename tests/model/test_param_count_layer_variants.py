"""Parameters where decoder layers differ: Gemma 4's full / KV-sharing attention, double-wide MLPs, per-layer
inputs, and per-layer ``intermediate_size`` lists.

vLLM 0.32 gemma4.py: Gemma4Attention (KV-sharing layers build q_proj, o_proj and q_norm only; the others
QKVParallelLinear, k_norm, a weightless v_norm), Gemma4DecoderLayer (head_dim / KV heads from
``per_layer_config``, MLP width doubled in KV-sharing layers with ``use_double_wide_mlp``, four norms,
per_layer_input_gate / per_layer_projection / post_per_layer_input_norm), Gemma4Model
(embed_tokens_per_layer, per_layer_model_projection, per_layer_projection_norm). The Gemma 4 config
is made up (no published one at hand); every figure is worked by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import read_architecture
from engine.model.param_count import active_params, decoder_layer_shapes, estimate_params

SLIDING, FULL = "sliding_attention", "full_attention"
GEMMA4: dict[str, Any] = {
    "architectures": ["Gemma4ForCausalLM"],
    "model_type": "gemma4_text",
    "hidden_size": 1536,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "global_head_dim": 512,
    "layer_types": [SLIDING] * 5 + [FULL] + [SLIDING] * 5 + [FULL],
    "sliding_window": 512,
    "num_kv_shared_layers": 4,  # layers 8-11: 8, 9, 10 sliding, 11 full
    "intermediate_size": 6144,
    "vocab_size": 262144,
    "hidden_size_per_layer_input": 0,
}
# h 1536, q 8 × 256 = 2048 (full: 8 × 512 = 4096), tied embeddings.
# Sliding with its own KV (0-4, 6, 7): q 1536·2048 = 3,145,728 + k, v 2·1536·256 = 786,432 + o
#   3,145,728 + q_norm, k_norm 512 = 7,078,400.
# Full with its own KV (5): q 1536·4096 = 6,291,456 + k, v 2·1536·512 = 1,572,864 + o 6,291,456
#   + norms 1024 = 14,156,800.
# KV-sharing sliding (8-10): q + o 6,291,456 + q_norm 256 = 6,291,712; full (11): 12,582,912 + 512.
ATTENTION = 7 * 7_078_400 + 14_156_800 + 3 * 6_291_712 + 12_583_424  # 95,164,160
MLP = 3 * 1536 * 6144  # 28,311,552 a layer
NORMS = 4 * 1536  # input, post_attention, pre_feedforward, post_feedforward
EMBEDDING = 262_144 * 1536  # 402,653,184
DECODER = ATTENTION + 12 * (MLP + NORMS)  # 434,976,512
TOTAL = DECODER + EMBEDDING + 1536  # final norm: 837,631,232
# Per-layer inputs of 256: per layer gate + projection 2·1536·256 = 786,432 and a norm 1536; the model
# embed_tokens_per_layer 262,144 × 12·256 = 805,306,368, per_layer_model_projection 1536·3072 =
# 4,718,592, per_layer_projection_norm 256.
PER_LAYER_INPUTS = 12 * (786_432 + 1536) + 805_306_368 + 4_718_592 + 256  # 819,480,832

# Gemma 4 MoE (enable_moe_block; vLLM: num_experts set) with 16 experts × 512, top 2: per layer experts
# 16·3·1536·512 = 37,748,736 + Gemma4Router proj 1536·16 = 24,576, scale 1536, per_expert_scale 16
# + three more norms 4608 = 37,779,472, beside the dense MLP.
MOE = {"enable_moe_block": True, "num_experts": 16, "top_k_experts": 2, "moe_intermediate_size": 512}
MOE_LAYER = 37_779_472

# overrides, loaded parameters
CASES = [
    (MOE, TOTAL + 12 * MOE_LAYER),  # 1,290,984,896
    ({}, TOTAL),
    ({"model_type": "gemma4_unified_text"}, TOTAL),  # the same Gemma4ForCausalLM (gemma4_unified.py)
    ({"use_double_wide_mlp": True}, TOTAL + 4 * MLP),  # layers 8-11 at 12,288
    ({"hidden_size_per_layer_input": 256}, TOTAL + PER_LAYER_INPUTS),
    ({"hidden_size_per_layer_input": None}, TOTAL + PER_LAYER_INPUTS),  # unset: transformers' 256
    # No KV sharing: layers 8-10 gain k, v 786,432 + k_norm 256, layer 11 k, v 1,572,864 + 512.
    ({"num_kv_shared_layers": 0}, TOTAL + 3 * 786_688 + 1_573_376),
]


def _arch(config: dict[str, Any], **overrides: Any) -> Any:
    return read_architecture(
        {key: value for key, value in {**config, **overrides}.items() if value is not None}, Path(".")
    )


@pytest.mark.parametrize(("overrides", "total"), CASES)
def test_gemma4_parameters(overrides: dict[str, Any], total: int) -> None:
    arch = _arch(GEMMA4, **overrides)
    assert estimate_params(arch).total == total


def test_gemma4_moe_active_parameters() -> None:
    # 14 of 16 routed experts idle in 12 layers: 12 · 2,359,296 · 14 = 396,361,728.
    arch = _arch(GEMMA4, **MOE)
    assert active_params(arch) == TOTAL + 12 * MOE_LAYER - 396_361_728
    assert sum(layer.counts().total for layer in decoder_layer_shapes(arch)) == DECODER + 12 * MOE_LAYER


def test_gemma4_layers_add_up_to_the_decoder() -> None:
    layers = decoder_layer_shapes(_arch(GEMMA4))
    assert [layer.counts().total for layer in layers[4:6]] == [
        7_078_400 + MLP + NORMS,
        14_156_800 + MLP + NORMS,
    ]
    assert layers[11].counts().total == 12_583_424 + MLP + NORMS
    assert sum(layer.counts().total for layer in layers) == DECODER


# A Llama-shaped model whose intermediate_size is a list: h 64, 2 layers, 4 heads × 16, untied vocab 100.
LLAMA: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 100,
}
# attention 4·64·64 = 16,384 a layer, norms 128; vocab 2·100·64 = 12,800; final norm 64.
LLAMA_REST = 2 * (16_384 + 128) + 12_800 + 64

# intermediate_size, loaded parameters (MLP 3·64·width a layer)
WIDTHS = [
    (128, LLAMA_REST + 2 * 3 * 64 * 128),
    ([128, 128], LLAMA_REST + 2 * 3 * 64 * 128),
    ([128, 256], LLAMA_REST + 3 * 64 * 128 + 3 * 64 * 256),  # 24,576 + 49,152
]


@pytest.mark.parametrize(("width", "total"), WIDTHS)
def test_a_per_layer_intermediate_size_list_is_summed_per_layer(width: int | list[int], total: int) -> None:
    arch = _arch(LLAMA, intermediate_size=width)
    assert estimate_params(arch).total == total
    assert arch.intermediate_size == 128  # the first layer's width
    assert [layer.counts().total for layer in decoder_layer_shapes(arch)] == [
        16_384 + 128 + 3 * 64 * (width[i] if isinstance(width, list) else width) for i in range(2)
    ]
