"""Gemma 3n's language model counted as vLLM 0.32's gemma3n.py builds it, and built by vLLM itself.

Gemma3nDecoderLayer: attention (QKVParallelLinear, q_norm, k_norm, a weightless v_norm; the KV-sharing layers
q_proj only, no k_norm), a gated MLP of the layer's ``intermediate_size``, LAuReL, AltUp, the per-layer input
gate and projection, five norms. Gemma3nSelfDecoder / Gemma3nTextModel: embed_tokens, embed_tokens_per_layer,
per_layer_model_projection and its norm, altup_projections and altup_unembed_projections, the final norm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import read_architecture
from engine.model.param_count import decoder_layer_shapes, estimate_params
from tests.model.vllm_meta_build import VllmMetaBuild

SLIDING, FULL = "sliding_attention", "full_attention"
# google/gemma-3n-E4B's text_config as transformers' Gemma3nTextConfig defaults give it (its docstring names that
# checkpoint); E2B's differs in depth, width and sharing (mlx-community/gemma-3n-E2B-it-lm-4bit's config.json).
E4B_TEXT: dict[str, Any] = {"model_type": "gemma3n_text", "architectures": ["Gemma3nForCausalLM"]}
E4B_TEXT |= {"hidden_size": 2048, "num_hidden_layers": 35, "intermediate_size": [16384] * 35}
E4B_TEXT |= {"num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 256, "sliding_window": 512}
E4B_TEXT |= {"layer_types": ([SLIDING] * 4 + [FULL]) * 7, "num_kv_shared_layers": 15}
E4B_TEXT |= {"vocab_size": 262400, "vocab_size_per_layer_input": 262144, "hidden_size_per_layer_input": 256}
E4B_TEXT |= {"altup_num_inputs": 4, "laurel_rank": 64, "tie_word_embeddings": True}
E2B_TEXT = E4B_TEXT | {"num_hidden_layers": 30, "intermediate_size": [8192] * 30, "num_kv_shared_layers": 10}
E2B_TEXT |= {"layer_types": ([SLIDING] * 4 + [FULL]) * 6}
# Four layers, the last two sharing KV (targets 0 and 1), three AltUp streams.
TINY_TEXT: dict[str, Any] = {"model_type": "gemma3n_text", "architectures": ["Gemma3nForCausalLM"]}
TINY_TEXT |= {"hidden_size": 64, "num_hidden_layers": 4, "intermediate_size": [128, 128, 96, 96]}
TINY_TEXT |= {"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "sliding_window": 8}
TINY_TEXT |= {"layer_types": [SLIDING, FULL, SLIDING, FULL], "num_kv_shared_layers": 2}
TINY_TEXT |= {"vocab_size": 100, "vocab_size_per_layer_input": 50, "hidden_size_per_layer_input": 8}
TINY_TEXT |= {"altup_num_inputs": 3, "laurel_rank": 8, "tie_word_embeddings": True}

# E4B (h 2048, q 8 × 256, KV 2 × 256), a layer with its own KV: qkv 2048·3072 = 6,291,456, o 2048² = 4,194,304,
# q/k norms 512, MLP 3·2048·16384 = 100,663,296, LAuReL 2·2048·64 + 2048 = 264,192, AltUp 4·4 + 4·16 + 2048·4
# + 2·2048 = 12,368, per-layer gate + projection 2·2048·256 = 1,048,576, five norms 10,240: 112,484,944.
# A KV-sharing layer: q_proj 2048² instead of qkv (-2,097,152), no k_norm (-256): 110,387,536.
# Model: embed_tokens 262,400·2048 = 537,395,200, embed_tokens_per_layer 262,144·35·256 = 2,348,810,240,
# per_layer_model_projection 2048·8960 = 18,350,080 and its norm 256, AltUp projections 2·3·2048² = 25,165,824,
# final norm 2048: 2,929,723,648. 20 · 112,484,944 + 15 · 110,387,536 + 2,929,723,648 = 6,835,235,568.
# E2B: MLP 3·2048·8192 = 50,331,648: 62,153,296 and 60,055,888 a layer; embed_tokens_per_layer 262,144·30·256 =
# 2,013,265,920, the projection 2048·7680 = 15,728,640: model 2,591,557,888; 20 · 62,153,296 + 10 · 60,055,888
# + 2,591,557,888 = 4,435,182,688.
# Tiny (h 64, q 2 × 16, KV 1 × 16): qkv 64·64 = 4,096, o 32·64 = 2,048, norms 32, LAuReL 2·64·8 + 64 = 1,088,
# AltUp 9 + 27 + 64·3 + 128 = 356, per-layer 2·64·8 = 1,024, five norms 320: 8,964 + MLP 3·64·128 = 24,576 =
# 33,540; sharing: 8,964 - 2,048 - 16 + 3·64·96 = 18,432: 25,332. Model: 100·64 = 6,400, 50·4·8 = 1,600,
# 64·32 = 2,048, 8, 2·2·64² = 16,384, 64: 26,504. 2 · 33,540 + 2 · 25,332 + 26,504 = 144,248.
CASES = [
    pytest.param(E4B_TEXT, 6_835_235_568, 112_484_944, 110_387_536, id="gemma-3n-E4B"),
    pytest.param(E2B_TEXT, 4_435_182_688, 62_153_296, 60_055_888, id="gemma-3n-E2B"),
    pytest.param(TINY_TEXT, 144_248, 33_540, 25_332, id="tiny"),
]


@pytest.mark.parametrize(("config", "total", "first_layer", "last_layer"), CASES)
def test_gemma3n_text_as_vllm_builds_it(
    tmp_path: Path, config: dict[str, Any], total: int, first_layer: int, last_layer: int
) -> None:
    arch = read_architecture(config, tmp_path)
    layers = [shapes.counts().total for shapes in decoder_layer_shapes(arch)]
    assert (estimate_params(arch).total, layers[0], layers[-1]) == (total, first_layer, last_layer)


def test_vllm_builds_the_same_decoder_layers(vllm_meta_build: VllmMetaBuild) -> None:
    # E4B: 20 · 112,484,944 + 15 · 110,387,536; tiny: 2 · 33,540 + 2 · 25,332 (the counts above).
    fields = {key: value for key, value in TINY_TEXT.items() if key != "architectures"}
    counts = vllm_meta_build.parameter_counts(
        [("gemma3n_layers", {}, None), ("gemma3n_layers", fields, None)]
    )
    assert counts == [3_905_511_920, 117_744]


def test_altup_and_laurel_are_counted_as_their_parts(tmp_path: Path) -> None:
    counts = estimate_params(read_architecture(TINY_TEXT, tmp_path))
    # Quantizable decoder linears: attention 2 · (4,096 + 2,048) + 2 · (2,048 + 2,048) = 20,480, MLPs 2 · 24,576 +
    # 2 · 18,432 = 86,016, LAuReL 4 · 1,024, per-layer gate + projection 4 · 1,024, per_layer_model_projection
    # 2,048, AltUp projections 16,384: 133,120. The AltUp coefficients and routers (4 · 228) stay 16-bit.
    assert counts.linear == 133_120
