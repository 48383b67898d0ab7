"""Which decoder layers of Mamba hybrids (Nemotron-H, Jamba, Falcon-H1) hold attention, Mamba or no mixer, which are MoE."""

from __future__ import annotations

from typing import Any


def _int_or(config: dict[str, Any], key: str, default: int) -> int:
    """``config[key]`` as an int, ``default`` where it is unset (0 is a real offset)."""
    return int(config[key]) if config.get(key) is not None else default


# NemotronHConfig._pattern_to_list: one letter per decoder layer of ``hybrid_override_pattern``.
# vLLM's nemotron_h.py::ALL_DECODER_LAYER_TYPES builds M as MambaMixer2, * as attention, - as an
# MLP-only layer and E as an MoE-only layer; the last two own no KV cache nor state.
NEMOTRON_H_LETTERS = {"M": "linear_attention", "*": "full_attention", "-": "mlp", "E": "moe"}
# Layer names of layers without a sequence mixer (no Attention or Mamba module: no KV cache spec).
MIXERLESS_NAMES = frozenset({"mlp", "moe"})


def hybrid_layer_names(text: dict[str, Any], num_layers: int) -> list[str] | None:
    """Each layer's name ("linear_attention", "full_attention", "mlp", "moe") for Mamba hybrids, else None.

    Nemotron-H: ``layers_block_type`` (transformers' NemotronHConfig saves it; legacy names are mapped
    by ``linear_layer_names``) or the legacy ``hybrid_override_pattern``. Falcon-H1: attention
    everywhere (its Mamba2 mixers are ``RecurrentState.parallel``). Jamba: ``JambaConfig.layers_block_type``: layer ``i`` is attention
    where ``i % attn_layer_period == attn_layer_offset`` (defaults 8 and 4), Mamba elsewhere.
    """
    model_type = str(text.get("model_type"))
    if model_type == "nemotron_h":
        names = text.get("layers_block_type")
        if names:
            return [str(name) for name in names]
        pattern = str(text.get("hybrid_override_pattern") or "")
        return [NEMOTRON_H_LETTERS.get(letter, "full_attention") for letter in pattern]
    if model_type == "falcon_h1":  # attention in every layer, its Mamba2 mixer beside it (not a layer kind)
        return ["full_attention"] * num_layers
    if model_type == "jamba":
        period = int(text.get("attn_layer_period") or 8)
        offset = _int_or(text, "attn_layer_offset", 4)
        return [
            "full_attention" if index % period == offset else "linear_attention"
            for index in range(num_layers)
        ]
    return None


def hybrid_moe_layers(text: dict[str, Any], num_layers: int) -> list[int] | None:
    """The MoE layers of Nemotron-H ("E" layers) and Jamba, else None (the generic rules apply).

    Jamba: ``JambaConfig.layers_num_experts``: layer ``i`` routes to experts where
    ``i % expert_layer_period == expert_layer_offset`` (defaults 2 and 1).
    """
    model_type = str(text.get("model_type"))
    if model_type == "nemotron_h":
        names = hybrid_layer_names(text, num_layers) or []
        return [index for index, name in enumerate(names) if name == "moe"]
    if model_type == "jamba":
        period = int(text.get("expert_layer_period") or 2)
        offset = _int_or(text, "expert_layer_offset", 1)
        return [index for index in range(num_layers) if index % period == offset]
    return None


def nemotron_h_shared_width(text: dict[str, Any]) -> int:
    """NemotronHMoE's shared expert: one MLP ``moe_shared_expert_intermediate_size × n_shared_experts`` wide."""
    return int(text.get("moe_shared_expert_intermediate_size") or 0) * int(text.get("n_shared_experts") or 0)


def hybrid_defaults(text: dict[str, Any]) -> dict[str, Any]:
    """What transformers' NemotronHConfig derives: ``num_hidden_layers`` is the length of ``layers_block_type``.

    transformers 5 saves a Nemotron-H config without ``num_hidden_layers`` (a property there).
    """
    if str(text.get("model_type")) == "nemotron_h":
        return {"num_hidden_layers": len(hybrid_layer_names(text, 0) or []) or None}
    return {}
