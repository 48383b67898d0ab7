"""Which decoder layers route to experts, how many experts and how wide, read from a config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.model import hybrid_layers
from engine.model.config_json import first_key


@dataclass(frozen=True, slots=True)
class MoeLayout:
    """Which layers route to experts and how wide the experts are.

    Attributes:
        num_experts: routed experts per MoE layer.
        experts_per_token: routed experts each token uses.
        expert_intermediate_size: one expert's MLP width.
        shared_intermediate_size: the always-on shared expert(s)' total MLP width (0 without).
        moe_layers: indices of the decoder layers that are MoE (the others are dense MLPs).
    """

    num_experts: int
    experts_per_token: int
    expert_intermediate_size: int
    shared_intermediate_size: int
    moe_layers: tuple[int, ...]


def read_moe_layout(
    text: dict[str, Any], model_type: str, num_layers: int, intermediate: int
) -> MoeLayout | None:
    """Routed experts and which layers have them, following each vLLM model file's rule."""
    experts = int(
        first_key(text, "num_experts", "moe_num_experts", "n_routed_experts", "num_local_experts", default=0)
    )
    if experts <= 1:
        return None
    per_token = int(
        first_key(
            text,
            "num_experts_per_tok",
            "num_experts_per_token",
            "top_k_experts",
            "moe_topk",
            "moe_top_k",
            default=1,
        )
    )
    if (hybrid := hybrid_layers.hybrid_moe_layers(text, num_layers)) is not None:  # Nemotron-H, Jamba
        layers = hybrid
    elif text.get("moe_layers") is not None:
        layers = [int(i) for i in text["moe_layers"]]
    elif text.get("interleave_moe_layer_step") is not None:  # Llama-4
        step = int(text["interleave_moe_layer_step"])
        layers = list(range(step - 1, num_layers, step))
    elif text.get("decoder_sparse_step") is not None:  # Qwen2/Qwen3-MoE
        step = int(text["decoder_sparse_step"])
        dense = set(text.get("mlp_only_layers") or [])
        layers = [i for i in range(num_layers) if i not in dense and (i + 1) % step == 0]
    else:  # DeepSeek, GLM-4-MoE, LFM2-MoE (num_dense_layers): dense first layers, then every moe_layer_freq-th
        first_dense = int(first_key(text, "first_k_dense_replace", "num_dense_layers", default=0))
        frequency = int(text.get("moe_layer_freq") or 1)
        layers = [i for i in range(num_layers) if i >= first_dense and i % frequency == 0]
    expert_width = int(first_key(text, "moe_intermediate_size", default=intermediate))
    if model_type == "llama4_text":
        expert_width = intermediate  # Llama-4's dense layers use intermediate_size_mlp instead
    shared = int(first_key(text, "shared_expert_intermediate_size", "shared_intermediate_size", default=0))
    shared = hybrid_layers.nemotron_h_shared_width(text) if model_type == "nemotron_h" else shared
    if not shared and text.get("n_shared_experts"):
        shared = int(text["n_shared_experts"]) * expert_width
    if not shared and model_type == "llama4_text":
        shared = expert_width  # one shared expert as wide as a routed one
    return MoeLayout(experts, per_token, expert_width, shared, tuple(layers))
