"""The published model configs of tests/fixtures/configs (listed in its README), written into a folder as a config-only checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.model.inspect_model import ModelInfo

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"


def published_config(name: str) -> dict[str, Any]:
    """The config.json of ``name`` (``llama-3.1-8b``, ``deepseek-v3``, ...) as its model card's repository holds it."""
    config: dict[str, Any] = json.loads((CONFIGS / f"{name}.json").read_text())
    return config


def write_config(
    folder: Path,
    name: str,
    changes: dict[str, Any] | None = None,
    text_changes: dict[str, Any] | None = None,
) -> Path:
    """Writes ``name``'s config into ``folder`` (made if missing) as its ``config.json``; returns ``folder``.

    Args:
        folder: the checkpoint folder.
        name: the config's file name in tests/fixtures/configs, without ``.json``.
        changes: keys to set at the top level.
        text_changes: keys to set in the text model's config (``text_config`` where there is one).
    """
    config = published_config(name)
    config.update(changes or {})
    (config.get("text_config") or config).update(text_changes or {})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def model_from_config(
    folder: Path,
    name: str,
    changes: dict[str, Any] | None = None,
    text_changes: dict[str, Any] | None = None,
) -> ModelInfo:
    """``name``'s config written into ``folder`` (see ``write_config``), read as quant-tui reads a checkpoint."""
    from engine.model.inspect_model import inspect_model

    return inspect_model(write_config(folder, name, changes, text_changes))


# A Llama decoder layer's Linears as ModelOpt names them: model.layers.{i}.self_attn.q_proj, ... mlp.down_proj.
_LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj"), ("gate_proj", "up_proj", "down_proj")


def modelopt_mixed_quant(layers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A ModelOpt MIXED_PRECISION quantization_config with ``layers`` as its quantized_layers (lm_head ignored)."""
    return {
        "quant_method": "modelopt",
        "quant_algo": "MIXED_PRECISION",
        "ignore": ["lm_head"],
        "quantized_layers": layers,
    }


def modelopt_mixed_layers(algos: list[str]) -> dict[str, dict[str, Any]]:
    """A ModelOpt MIXED_PRECISION ``quantized_layers`` giving layer i's seven Llama Linears ``algos[i]`` (NVFP4: group 16)."""
    layers: dict[str, dict[str, Any]] = {}
    for index, algo in enumerate(algos):
        recipe: dict[str, Any] = {"quant_algo": algo} | ({"group_size": 16} if algo == "NVFP4" else {})
        for block, names in zip(("self_attn", "mlp"), _LLAMA_MODULES, strict=True):
            layers |= {f"model.layers.{index}.{block}.{name}": recipe for name in names}
    return layers


# A made-up tiny Gemma 4 text config: h 64, 2 heads, 1 KV head × 16, layer 1 full with global_head_dim 32,
# MLP 128, vocab 256, tied, no per-layer inputs, no KV sharing.
# Sliding layer 0: q 64·32 = 2048 + k, v 2·64·16 = 2048 + o 32·64 = 2048 + q/k norms 32 = 6176.
# Full layer 1: q 64·64 = 4096 + k, v 2·64·32 = 4096 + o 4096 + q/k norms 64 = 12,352.
# MLPs 2·3·64·128 = 49,152; four norms a layer 2·256 = 512; embedding 256·64 = 16,384; final norm 64.
TINY_GEMMA4_TOTAL = 6_176 + 12_352 + 49_152 + 512 + 16_384 + 64  # 84,640
TINY_GEMMA4_TEXT: dict[str, Any] = {
    "architectures": ["Gemma4ForCausalLM"],
    "model_type": "gemma4_text",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "global_head_dim": 32,
    "layer_types": ["sliding_attention", "full_attention"],
    "sliding_window": 8,
    "intermediate_size": 128,
    "vocab_size": 256,
    "tie_word_embeddings": True,
    "hidden_size_per_layer_input": 0,
    "num_kv_shared_layers": 0,
}
