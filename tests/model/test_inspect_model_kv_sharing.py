"""KV-sharing layers' K/V tensors, on disk but dropped at load, leave inspect_model's loaded counts.

vLLM 0.32: gemma4.py::Gemma4Attention and gemma3n.py::Gemma3nAttention build q_proj, o_proj and
q_norm only in the last ``num_kv_shared_layers`` layers; gemma4.py::_gemma4_layer_weights_mapper and
gemma3n.py::_kv_sharing_weights_mapper map ``layers.{i}.self_attn.{k_proj,v_proj,k_norm}.`` to None
there ("the K/V tensors original checkpoints still ship for them are dropped"). The checkpoint
names are the multimodal wrapper's (``model.language_model.layers.N.self_attn.k_proj.weight``),
which Gemma4ForCausalLM maps to ``model.`` too. Configs and tensors are made up, figures by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from engine.model.inspect_model import inspect_model

SLIDING, FULL = "sliding_attention", "full_attention"
# Hidden 8, 2 query heads, 1 KV head; sliding heads 4 wide, full (global_head_dim) 8; layers 2 and
# 3 (the last num_kv_shared_layers) read layers 0 and 1's caches.
GEMMA4: dict[str, Any] = {
    "architectures": ["Gemma4ForCausalLM"],
    "model_type": "gemma4_text",
    "hidden_size": 8,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 4,
    "global_head_dim": 8,
    "layer_types": [SLIDING, FULL, SLIDING, FULL],
    "sliding_window": 16,
    "num_kv_shared_layers": 2,
    "hidden_size_per_layer_input": 0,
    "intermediate_size": 16,
    "vocab_size": 16,
    "tie_word_embeddings": True,
}
GEMMA3N = {**GEMMA4, "architectures": ["Gemma3nForCausalLM"], "model_type": "gemma3n_text"}


def _write(folder: Path, config: dict[str, Any]) -> Path:
    """A float16 checkpoint with every layer's q/k/v/o, q_norm, k_norm and MLP (KV-sharing ones too)."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    tensors = {
        "model.language_model.embed_tokens.weight": np.zeros((16, 8), np.float16),
        "model.language_model.norm.weight": np.zeros(8, np.float16),
    }
    for index, kind in enumerate(config["layer_types"]):
        head = 8 if kind == FULL and config["model_type"] == "gemma4_text" else 4
        shapes = {
            "self_attn.q_proj.weight": (2 * head, 8),
            "self_attn.k_proj.weight": (head, 8),
            "self_attn.v_proj.weight": (head, 8),
            "self_attn.o_proj.weight": (8, 2 * head),
            "self_attn.q_norm.weight": (head,),
            "self_attn.k_norm.weight": (head,),
            "mlp.gate_proj.weight": (16, 8),
            "mlp.up_proj.weight": (16, 8),
            "mlp.down_proj.weight": (8, 16),
        }
        for name, shape in shapes.items():
            tensors[f"model.language_model.layers.{index}.{name}"] = np.zeros(shape, np.float16)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


# Per layer, params: MLP 3 × 128 = 384 everywhere. Sliding (head 4): q 64 + k 32 + v 32 + o 64 +
# q_norm 4 + k_norm 4 = 200 → 584; KV-sharing sliding drops k, v, k_norm (68): 516. Full (head 8):
# 128 + 64 + 64 + 128 + 8 + 8 = 400 → 784; KV-sharing full drops 136: 648. Embedding 128, norm 8.
# Linear: sliding 64 + 32 + 32 + 64 + 384 = 576, shared 512; full 768, shared 640.
# On disk: 584 + 784 + 584 + 784 + 136 = 2872 params, 5744 bytes (float16).
CASES = [
    # Gemma 4: loaded 584 + 784 + 516 + 648 + 136 = 2668 params, 5336 bytes; Linear 2496.
    (GEMMA4, 2668, 2496, (584, 784, 516, 648), 5744),
    # No KV sharing: all 2872 loaded; Linear 576 + 768 + 576 + 768 = 2688.
    ({**GEMMA4, "num_kv_shared_layers": 0}, 2872, 2688, (584, 784, 584, 784), 5744),
    # Gemma 3n: one head size (4). On disk 4 × 584 + 136 = 2472 params, 4944 bytes; layers 2 and 3
    # drop 68 each: 2472 − 136 = 2336 loaded, 4672 bytes; Linear 4 × 576 − 2 × 64 = 2176.
    (GEMMA3N, 2336, 2176, (584, 584, 516, 516), 4944),
]


@pytest.mark.parametrize(("config", "params", "linear", "layer_params", "disk_bytes"), CASES)
def test_kv_sharing_layers_k_and_v_are_not_loaded(
    tmp_path: Path,
    config: dict[str, Any],
    params: int,
    linear: int,
    layer_params: tuple[int, ...],
    disk_bytes: int,
) -> None:
    info = inspect_model(_write(tmp_path / "model", config))
    assert info.params_source == "safetensors"
    assert (info.params, info.linear_params, info.layer_params) == (params, linear, layer_params)
    # float16: 2 bytes a parameter; the dropped tensors stay in what the folder holds.
    assert (info.loaded_weight_bytes, info.layer_bytes) == (2 * params, tuple(2 * p for p in layer_params))
    assert (info.weight_bytes, info.mtp_params) == (disk_bytes, 0)


@pytest.mark.parametrize("model_type", ["gemma4_text", "gemma3n_text"])
def test_the_dropped_names_are_the_ones_vllms_mappers_drop(model_type: str) -> None:
    from vllm.model_executor.models.gemma3n import _kv_sharing_weights_mapper
    from vllm.model_executor.models.gemma4 import _gemma4_layer_weights_mapper

    from engine.model.architecture import read_architecture
    from engine.model.shared_kv_layers import kv_shared_weight_prefixes

    config = {**GEMMA4, "model_type": model_type}
    shared = read_architecture(config, Path(".")).attention.kv_shared_layers
    prefixes = kv_shared_weight_prefixes(shared)
    vllm_config = SimpleNamespace(**config)
    mapper = (_gemma4_layer_weights_mapper if model_type == "gemma4_text" else _kv_sharing_weights_mapper)(
        vllm_config
    )
    parts = ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")
    # vLLM's Gemma4Model / Gemma3nTextModel see the names below ``model.language_model.``.
    inner = [f"layers.{i}.self_attn.{part}.weight" for i in range(4) for part in parts]
    ours = [name for name in inner if f"model.language_model.{name}".startswith(prefixes)]
    assert ours == [name for name in inner if mapper.map_name(name) is None]
    assert len(ours) == 6  # layers 2 and 3: k_proj, v_proj, k_norm
