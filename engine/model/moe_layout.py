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


def _text_side(value: Any) -> Any:
    """The text experts' value of an ERNIE-4.5-VL (text, vision) pair; any other value as it is."""
    return value[0] if isinstance(value, list) else value


def read_moe_layout(
    text: dict[str, Any], model_type: str, num_layers: int, intermediate: int
) -> MoeLayout | None:
    """Routed experts and which layers have them, following each vLLM model file's rule.

    ERNIE-4.5-VL's text experts (its vision experts: ``ernie_vl.ernie_vl_vision_experts``); its MoE layers are
    taken to be those of the text experts' range, which in vLLM's Ernie4_5_VLMoeDecoderLayer is the union of both.
    """
    experts = int(
        _text_side(
            first_key(
                text, "num_experts", "moe_num_experts", "n_routed_experts", "num_local_experts", default=0
            )
        )
    )
    if experts <= 1 or text.get("use_moe") is False:  # ERNIE-4.5's use_moe
        return None
    per_token = int(
        first_key(
            text,
            "num_experts_per_tok",
            "num_experts_per_token",
            "top_k_experts",
            "moe_topk",
            "moe_top_k",
            "moe_k",
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
    elif text.get("moe_layer_start_index") is not None:  # ERNIE-4.5: each moe_layer_interval-th of start..end
        start = int(_text_side(text["moe_layer_start_index"]))
        end = int(_text_side(first_key(text, "moe_layer_end_index", default=-1)))
        end = num_layers - 1 if end == -1 else end  # Ernie4_5_MoeConfig's -1: the last layer
        interval = int(text.get("moe_layer_interval") or 1)
        layers = [i for i in range(start, min(end + 1, num_layers)) if (i + 1) % interval == 0]
    elif text.get("decoder_sparse_step") is not None:  # Qwen2/Qwen3-MoE
        step = int(text["decoder_sparse_step"])
        dense = set(text.get("mlp_only_layers") or [])
        layers = [i for i in range(num_layers) if i not in dense and (i + 1) % step == 0]
    else:  # DeepSeek, GLM-4-MoE, LFM2-MoE (num_dense_layers): dense first layers, then every moe_layer_freq-th
        first_dense = int(first_key(text, "first_k_dense_replace", "num_dense_layers", default=0))
        frequency = int(text.get("moe_layer_freq") or 1)
        layers = [i for i in range(num_layers) if i >= first_dense and i % frequency == 0]
    expert_width = int(_text_side(first_key(text, "moe_intermediate_size", default=intermediate)))
    if model_type == "llama4_text":
        expert_width = intermediate  # Llama-4's dense layers use intermediate_size_mlp instead
    shared = int(first_key(text, "shared_expert_intermediate_size", "shared_intermediate_size", default=0))
    shared = hybrid_layers.nemotron_h_shared_width(text) if model_type == "nemotron_h" else shared
    if not shared and (shared_experts := first_key(text, "n_shared_experts", "moe_num_shared_experts")):
        shared = int(shared_experts) * expert_width
    if not shared and model_type == "llama4_text":
        shared = expert_width  # one shared expert as wide as a routed one
    return MoeLayout(experts, per_token, expert_width, shared, tuple(layers))
