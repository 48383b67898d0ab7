"""Tests for engine.model.mtp_layers: how many MTP layers each family ships, and their parameters config-only and from headers.

The rules follow vLLM 0.32: qwen3_next_mtp.py (``num_nextn_predict_layers``, default 1), qwen3_5_mtp.py
(``mtp_num_hidden_layers``, default 1), nemotron_h_mtp.py (``num_nextn_predict_layers`` > 0,
config/speculative.py) and deepseek_mtp.py. Every figure is worked by hand in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from engine.model.architecture import read_architecture
from engine.model.inspect_model import inspect_model
from engine.model.param_count import estimate_params
from tests.plan.model_configs import TINY_GEMMA4_TEXT, TINY_GEMMA4_TOTAL

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"
NEXT_80B = "qwen3-next-80b-a3b-instruct"
QWEN35_9B = "qwen3.5-9b"
NANO_30B = "nemotron-3-nano-30b-a3b"

# Qwen3-Next-80B (h 2048): gated q_proj 2048·2·16·256 = 16,777,216 + k, v 2·2048·512 = 2,097,152 + o
# 4096·2048 = 8,388,608 + q/k norms 512 = 27,263,488; MoE 512·3·2048·512 = 1,610,612,736 + router
# 512·2048 = 1,048,576 + shared expert 3·2048·512 = 3,145,728 + shared_expert_gate 2048 =
# 1,614,809,088; the layer's two norms 4096: one layer 1,642,076,672. Once per predictor: fc
# 4096·2048 = 8,388,608 + pre_fc_norm_embedding, pre_fc_norm_hidden, norm 3·2048 = 6144.
NEXT_PREDICTOR = 8_388_608 + 6_144
NEXT_LAYER = 27_263_488 + 1_614_809_088 + 4_096
# Qwen3.5-9B (h 4096, dense): gated q_proj 4096·8192 = 33,554,432 + k, v 2·4096·1024 = 8,388,608 + o
# 4096·4096 = 16,777,216 + q/k norms 512 = 58,720,768; MLP 3·4096·12,288 = 150,994,944 + norms 8192;
# fc 8192·4096 = 33,554,432 + three norms 12,288.
QWEN35_MTP = 58_720_768 + 150_994_944 + 8_192 + 33_554_432 + 12_288
# Nemotron-3-Nano (h 2688) with one "*E" MTP step: attention q 2688·4096 = 11,010,048 + k, v
# 2·2688·256 = 1,376,256 + o 11,010,048 = 23,396,352; MoE (relu2, no gate) 128·2·2688·1856 =
# 1,277,165,568 + router 344,064 + shared expert 2·2688·3712 = 19,955,712 + e_score_correction_bias 128
# = 1,297,465,472; a norm per layer 2·2688; eh_proj 2·2688·2688 = 14,450,688 + enorm, hnorm and
# final_layernorm 3·2688.
NANO_MTP_STEP = 23_396_352 + 1_297_465_472 + 2 * 2_688 + 14_450_688 + 3 * 2_688


def _config(name: str, **overrides: Any) -> dict[str, Any]:
    config = json.loads((CONFIGS / f"{name}.json").read_text())
    (config.get("text_config") or config).update(overrides)
    return config


# fixture, overrides, MTP layers, MTP parameters
MTP_CASES = [
    # The fixture has no num_nextn_predict_layers (nor does transformers' Qwen3NextConfig): vLLM's 1.
    (NEXT_80B, {}, 1, NEXT_PREDICTOR + NEXT_LAYER),  # 1,650,471,424
    (NEXT_80B, {"num_nextn_predict_layers": 2}, 2, NEXT_PREDICTOR + 2 * NEXT_LAYER),
    (NEXT_80B, {"num_nextn_predict_layers": 0}, 0, 0),
    (QWEN35_9B, {}, 1, QWEN35_MTP),  # mtp_num_hidden_layers 1: 243,290,624
    (QWEN35_9B, {"mtp_num_hidden_layers": 0}, 0, 0),
    (QWEN35_9B, {"mtp_num_hidden_layers": None}, 1, QWEN35_MTP),  # unset: vLLM's default 1
    # Nemotron-3-Nano's config declares no MTP (transformers' default 0): nothing to count.
    (NANO_30B, {}, 0, 0),
    (NANO_30B, {"num_nextn_predict_layers": 1, "mtp_hybrid_override_pattern": "*E"}, 1, NANO_MTP_STEP),
    (
        NANO_30B,
        {"num_nextn_predict_layers": 1, "mtp_layers_block_type": ["attention", "moe"]},
        1,
        NANO_MTP_STEP,
    ),
    # transformers' NemotronHConfig: mtp_layers_block_type defaults to ["full_attention", "moe"].
    (NANO_30B, {"num_nextn_predict_layers": 1}, 1, NANO_MTP_STEP),
]


@pytest.mark.parametrize(("name", "overrides", "layers", "params"), MTP_CASES)
def test_config_only_mtp_layers(name: str, overrides: dict[str, Any], layers: int, params: int) -> None:
    arch = read_architecture(_config(name, **overrides), CONFIGS)
    assert arch.attention.mtp_layers == layers
    assert estimate_params(arch).mtp == params
    assert arch.attention.description.endswith(" (+1 MTP, not loaded)") == (layers == 1)


def test_mtp_layers_stay_out_of_the_served_count() -> None:
    with_mtp = estimate_params(read_architecture(_config(NEXT_80B), CONFIGS))
    without = estimate_params(read_architecture(_config(NEXT_80B, num_nextn_predict_layers=0), CONFIGS))
    assert with_mtp.total == without.total == 79_674_391_296


def test_qwen35_served_plus_mtp_is_near_the_published_checkpoint() -> None:
    # Qwen/Qwen3.5-9B model.safetensors.index.json total_size 19,306,216,416 B = 9,653,108,208 bf16
    # parameters, MTP included (tests/fixtures/configs/README.md); the rest of the gap is the vision
    # tower's estimate.
    counts = estimate_params(read_architecture(_config(QWEN35_9B), CONFIGS))
    assert counts.total + counts.mtp == pytest.approx(9_653_108_208, rel=0.003)


# A tiny Qwen3-Next: h 64, 2 heads × 16, 1 KV head, 4 experts × 32, shared expert 32, vocab 128.
TINY_NEXT = {
    "architectures": ["Qwen3NextForCausalLM"],
    "model_type": "qwen3_next",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "full_attention_interval": 4,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 2,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_conv_kernel_dim": 4,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
    "decoder_sparse_step": 1,
    "vocab_size": 128,
    "tie_word_embeddings": False,
}


def _tiny_mtp_tensors() -> dict[str, np.ndarray]:
    """The mtp.* tensors of the published Qwen3-Next checkpoints (unfused experts), at the tiny sizes."""
    shapes: dict[str, tuple[int, ...]] = {
        "mtp.fc.weight": (64, 128),  # 8192
        "mtp.pre_fc_norm_embedding.weight": (64,),
        "mtp.pre_fc_norm_hidden.weight": (64,),
        "mtp.norm.weight": (64,),  # 192 with the two above
        "mtp.layers.0.input_layernorm.weight": (64,),
        "mtp.layers.0.post_attention_layernorm.weight": (64,),  # 128
        "mtp.layers.0.self_attn.q_proj.weight": (64, 64),  # gated: 2 · 2 · 16 rows, 4096
        "mtp.layers.0.self_attn.k_proj.weight": (16, 64),
        "mtp.layers.0.self_attn.v_proj.weight": (16, 64),
        "mtp.layers.0.self_attn.o_proj.weight": (64, 32),
        "mtp.layers.0.self_attn.q_norm.weight": (16,),
        "mtp.layers.0.self_attn.k_norm.weight": (16,),  # attention 8224
        "mtp.layers.0.mlp.gate.weight": (4, 64),  # 256
        "mtp.layers.0.mlp.shared_expert.gate_proj.weight": (32, 64),
        "mtp.layers.0.mlp.shared_expert.up_proj.weight": (32, 64),
        "mtp.layers.0.mlp.shared_expert.down_proj.weight": (64, 32),  # 6144
        "mtp.layers.0.mlp.shared_expert_gate.weight": (1, 64),  # 64
    }
    for expert in range(4):  # 4 · 3 · 2048 = 24,576
        prefix = f"mtp.layers.0.mlp.experts.{expert}."
        shapes |= {prefix + "gate_proj.weight": (32, 64), prefix + "up_proj.weight": (32, 64)}
        shapes[prefix + "down_proj.weight"] = (64, 32)
    return {name: np.zeros(shape, np.float16) for name, shape in shapes.items()}


TINY_MTP = 8_192 + 192 + 128 + 8_224 + 256 + 6_144 + 64 + 24_576  # 47,776
SUMMARY = "MQA 1 KV head × 16, layers: 3 linear (GDN) + 1 full"


# with the mtp.* tensors, MTP parameters from the headers, the UI line
HEADER_CASES = [(True, TINY_MTP, SUMMARY + " (+1 MTP, not loaded)"), (False, 0, SUMMARY)]


@pytest.mark.parametrize(("with_mtp", "mtp_params", "summary"), HEADER_CASES)
def test_headers_count_the_same_mtp_as_the_config(
    tmp_path: Path, with_mtp: bool, mtp_params: int, summary: str
) -> None:
    (tmp_path / "config.json").write_text(json.dumps(TINY_NEXT))
    tensors = {"model.embed_tokens.weight": np.zeros((128, 64), np.float16)}  # 8192 loaded
    tensors |= _tiny_mtp_tensors() if with_mtp else {}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    model = inspect_model(tmp_path)
    assert (model.params, model.mtp_params) == (8_192, mtp_params)
    assert model.loaded_weight_bytes == 2 * 8_192
    assert model.attention_summary == summary
    assert estimate_params(read_architecture(TINY_NEXT, tmp_path)).mtp == TINY_MTP


def _gemma4(wrapped: bool, **overrides: Any) -> dict[str, Any]:
    text = {**TINY_GEMMA4_TEXT, **overrides}
    if not wrapped:
        return text
    return {"architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4", "text_config": text}


# Gemma 4's MTP is the separate "assistant" checkpoint (gemma4_assistant, vLLM 0.32 gemma4_mtp.py, loaded
# only as --speculative-config's draft model): the served checkpoint holds no predictor, so no MTP layer
# and no MTP parameter, even where a config carries another family's MTP key.
# wrapped in the multimodal config, overrides
GEMMA4_CASES = [
    (False, {}),
    (True, {}),
    (False, {"num_nextn_predict_layers": 1}),
    (True, {"num_nextn_predict_layers": 2}),
    (False, {"mtp_num_hidden_layers": 1}),
]


@pytest.mark.parametrize(("wrapped", "overrides"), GEMMA4_CASES)
def test_gemma4_counts_no_mtp(wrapped: bool, overrides: dict[str, Any]) -> None:
    arch = read_architecture(_gemma4(wrapped, **overrides), CONFIGS)
    counts = estimate_params(arch)
    assert arch.attention.mtp_layers == 0
    assert (counts.mtp, counts.total) == (0, TINY_GEMMA4_TOTAL)
    assert "MTP" not in arch.attention.description
