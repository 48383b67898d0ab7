"""Tests for engine.model.inspect_model counting parameters from safetensors headers: packed 4-bit formats and MTP layers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from engine.model.inspect_model import inspect_model

CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "vocab_size": 16,
    "kv_lora_rank": 4,
    "qk_rope_head_dim": 2,
    "num_nextn_predict_layers": 1,
}


def test_mtp_layer_tensors_are_counted_apart(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    tensors = {
        "model.embed_tokens.weight": np.zeros((16, 8), np.float16),  # 128
        "model.layers.0.self_attn.o_proj.weight": np.zeros((8, 8), np.float16),  # 64
        "model.layers.0.input_layernorm.weight": np.zeros((8,), np.float16),  # 8
        "model.layers.1.eh_proj.weight": np.zeros((8, 16), np.float16),  # 128: the MTP layer
        "model.layers.1.enorm.weight": np.zeros((8,), np.float16),  # 8
        "lm_head.weight": np.zeros((16, 8), np.float16),  # 128
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    model = inspect_model(tmp_path)
    assert (model.params, model.mtp_params) == (328, 136)
    assert model.weight_bytes == 2 * (328 + 136)  # on disk, MTP included
    assert model.loaded_weight_bytes == 2 * 328  # what vLLM loads
    assert model.attention_summary == "MLA latent 6 (4 + 2 rope) × 1 layers (+1 MTP, not loaded)"


def test_mxfp4_blocks_count_two_weights_per_byte(tmp_path: Path) -> None:
    config = {"model_type": "gpt_oss", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 1}
    (tmp_path / "config.json").write_text(json.dumps(config))
    tensors = {
        # 2 experts × 4 rows × (64 inputs / 32 per block) × 16 bytes = 256 bytes = 512 weights
        "model.layers.0.mlp.experts.down_proj_blocks": np.zeros((2, 4, 2, 16), np.uint8),
        "model.layers.0.mlp.experts.down_proj_scales": np.zeros((2, 4, 2), np.uint8),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    model = inspect_model(tmp_path)
    assert model.params == 512
    assert model.linear_params == 512
    assert model.weight_bytes == 256 + 16
