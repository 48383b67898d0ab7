"""LFM2's short-convolution layers, MLP width and config spellings, as vLLM's lfm2.py / lfm2_moe.py read them."""

from __future__ import annotations

from typing import Any

from engine.model.linear_shape import LinearShape

# vLLM's Lfm2ForCausalLM and Lfm2MoeForCausalLM (also the language model of Lfm2VlForConditionalGeneration).
LFM2_MODEL_TYPES = frozenset({"lfm2", "lfm2_moe"})
# transformers' Lfm2Config: a layer is "conv" or "full_attention"; the KV manager sees a conv layer as a
# Mamba-style layer with a state (``ShortConv`` is a ``MambaBase``).
SHORT_CONV_LAYER = "conv"


def lfm2_config(text: dict[str, Any]) -> dict[str, Any]:
    """An LFM2 text config as transformers' Lfm2Config / Lfm2MoeConfig load it and vLLM builds it.

    ``Lfm2Config.__post_init__`` takes ``block_ff_dim`` for ``intermediate_size`` and fills ``layer_types``
    from ``full_attn_idxs`` (every layer attention when neither is set). vLLM ties the head to the embedding whatever the config says
    (``self.lm_head.tie_weights(self.model.embed_tokens)``). Other model types pass through unchanged.
    """
    if str(text.get("model_type")) not in LFM2_MODEL_TYPES:
        return text
    filled = dict(text)
    if text.get("block_ff_dim") is not None:
        filled["intermediate_size"] = text["block_ff_dim"]
    if not text.get("layer_types") and text.get("num_hidden_layers"):
        layers = int(text["num_hidden_layers"])
        attention = text.get("full_attn_idxs")
        attention = set(range(layers)) if attention is None else {int(index) for index in attention}
        filled["layer_types"] = [
            "full_attention" if index in attention else SHORT_CONV_LAYER for index in range(layers)
        ]
    filled["tie_word_embeddings"] = True
    return filled


def lfm2_mlp_width(text: dict[str, Any]) -> int:
    """The dense MLP's width vLLM's ``Lfm2MLP`` builds: ``intermediate_size``, auto-adjusted by default.

    With ``block_auto_adjust_ff_dim`` (default True): ``int(2 · size / 3)``, times
    ``block_ffn_dim_multiplier`` (default 1.0, truncated), rounded up to ``block_multiple_of`` (256).
    LFM2-MoE's dense layers (``Lfm2MoeMlp``) take ``intermediate_size`` as it is.
    """
    size = int(text["intermediate_size"])
    if str(text.get("model_type")) != "lfm2" or not text.get("block_auto_adjust_ff_dim", True):
        return size
    size = int(2 * size / 3)
    multiplier = text.get("block_ffn_dim_multiplier", 1.0)
    if multiplier is not None:
        size = int(multiplier * size)
    multiple = int(text.get("block_multiple_of") or 256)
    return multiple * -(-size // multiple)


def short_conv_dim(text: dict[str, Any]) -> int:
    """The channels of a ShortConv layer: LFM2's ``conv_dim`` (its hidden size where unset), LFM2-MoE's hidden size."""
    if str(text.get("model_type")) == "lfm2" and text.get("conv_dim"):
        return int(text["conv_dim"])
    return int(text["hidden_size"])


def short_conv_shapes(dim: int, kernel: int, bias: bool, layers: int) -> tuple[list[LinearShape], int]:
    """vLLM's ``ShortConv`` (layers/mamba/short_conv.py) over ``layers`` layers, and its vector parameters per layer.

    in_proj (dim → B, C, x: 3 · dim) and out_proj (dim → dim) are built with the quantization config;
    the depthwise conv (dim × ``kernel``, the config's ``conv_L_cache``) is a Linear built without it, counted as
    a vector here. ``bias`` (the config's ``conv_bias``) gives all three a bias.
    """
    if not layers:
        return [], 0
    shapes = [
        LinearShape("short_conv.in_proj", "linear_attention", dim, 3 * dim, layers),
        LinearShape("short_conv.out_proj", "linear_attention", dim, dim, layers),
    ]
    biases = 5 * dim if bias else 0  # conv dim, in_proj 3 · dim, out_proj dim
    return shapes, dim * kernel + biases
