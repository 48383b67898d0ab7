"""Multi-token-prediction (MTP) layers a checkpoint ships beside its decoder: how many, per family, as vLLM's ``*_mtp.py`` reads them."""

from __future__ import annotations

from typing import Any, Literal

from engine.model.hybrid_layers import NEMOTRON_H_LETTERS

# How the MTP block is built (param_count counts each style):
# "deepseek": per layer enorm, hnorm, eh_proj (2h → h), one decoder layer, shared_head norm and the
#   embed_tokens / head copies the checkpoint stores (deepseek_mtp.py::DeepSeekMultiTokenPredictorLayer).
#   GLM-4-MoE builds the same (glm4_moe_mtp.py::Glm4MoeMultiTokenPredictorLayer): its decoder layer is
#   built at index num_hidden_layers (>= first_k_dense_replace), so MoE; GLM-4.5's checkpoint stores the
#   copies, and load_weights also maps model.embed_tokens / lm_head into them for one without.
# "qwen": one fc (2h → h), pre_fc_norm_embedding / _hidden and norm for the whole predictor, then
#   full-attention decoder layers; embedding and lm_head shared with the main model, not in ``mtp.*``
#   (qwen3_next_mtp.py::Qwen3NextMultiTokenPredictor, qwen3_5_mtp.py::Qwen3_5MultiTokenPredictor).
# "nemotron_h": each step one decoder layer per MTP block type, enorm + hnorm + eh_proj on the first,
#   final_layernorm on the last; embedding shared (nemotron_h_mtp.py::NemotronHMultiTokenPredictor).
# "ernie": per layer mtp_emb_norm, mtp_hidden_norm, mtp_linear_proj (2h → h) and a dense LlamaDecoderLayer
#   (intermediate_size); embedding and head shared (ernie_mtp.py::ErnieMultiTokenPredictorLayer).
MtpStyle = Literal["deepseek", "qwen", "nemotron_h", "ernie"]
MtpBlock = Literal["attention", "moe", "mlp"]

# Where each Qwen family keeps its MTP layer count; vLLM's default is 1 when the config has no such
# key (``getattr(config, ..., 1)`` in both predictors; transformers' config classes define neither,
# so the key stays whatever config.json says).
_QWEN_COUNT_KEYS = {
    "qwen3_next": "num_nextn_predict_layers",
    "qwen3_5_text": "mtp_num_hidden_layers",
    "qwen3_5_moe_text": "mtp_num_hidden_layers",
}
# Gemma 4's multi-token predictor is a separate draft checkpoint, never part of the served one: the
# "assistant" repo (model_type gemma4_assistant / gemma4_unified_assistant, e.g.
# google/gemma-4-e2b-it-assistant) that vLLM 0.32 builds as gemma4_mtp.py::Gemma4MTP only when it is
# passed as --speculative-config's draft model (config/speculative.py rewrites that draft config's
# model_type to gemma4_mtp). The main checkpoint's config has no MTP key and gemma4.py / gemma4_mm.py
# build and load no predictor, so nothing of the assistant is counted here, whatever the config holds.
_SEPARATE_DRAFT_CHECKPOINT = {"gemma4", "gemma4_text", "gemma4_unified", "gemma4_unified_text"}
# transformers' NemotronHConfig: ``mtp_layers_block_type`` defaults to attention then MoE; the legacy
# ``mtp_hybrid_override_pattern`` ("*E") is read with the decoder's letters.
_NEMOTRON_H_DEFAULT_BLOCKS: tuple[MtpBlock, ...] = ("attention", "moe")
_BLOCK_NAMES: dict[str, MtpBlock] = {
    "full_attention": "attention",
    "attention": "attention",
    "moe": "moe",
    "mlp": "mlp",
}


def mtp_style(model_type: str) -> MtpStyle:
    """Which vLLM MTP module the family's checkpoint ships (see ``MtpStyle``)."""
    if model_type in _QWEN_COUNT_KEYS:
        return "qwen"
    if model_type == "nemotron_h":
        return "nemotron_h"
    if model_type == "ernie4_5_moe":
        return "ernie"
    return "deepseek"


def mtp_layer_count(text: dict[str, Any], model_type: str) -> int:
    """MTP layers (Nemotron-H: MTP steps) the checkpoint holds beside the decoder, 0 without.

    Qwen3-Next: ``num_nextn_predict_layers``, default 1; Qwen3.5: ``mtp_num_hidden_layers``, default 1.
    Nemotron-H: ``num_nextn_predict_layers`` (transformers' default 0; vllm/config/speculative.py
    makes the model ``nemotron_h_mtp`` only when it is > 0). Gemma 4: always 0, its MTP being a
    separate assistant checkpoint (``_SEPARATE_DRAFT_CHECKPOINT``). Others (DeepSeek, GLM-4-MoE, ...):
    ``num_nextn_predict_layers``, default 0.
    """
    if model_type in _SEPARATE_DRAFT_CHECKPOINT:
        return 0
    key = _QWEN_COUNT_KEYS.get(model_type)
    if key is not None:
        value = text.get(key)
        return 1 if value is None else int(value)
    return int(text.get("num_nextn_predict_layers") or 0)


def nemotron_h_mtp_blocks(text: dict[str, Any]) -> tuple[MtpBlock, ...]:
    """One Nemotron-H MTP step's decoder layers, in order: "attention", "moe" or "mlp" each.

    vLLM builds "*" as NemotronHMTPAttentionDecoderLayer and "E" as NemotronHMTPMoEDecoderLayer (any
    other letter is NotImplementedError there); an MLP block is counted as the decoder's "-" layer.
    """
    names = text.get("mtp_layers_block_type")
    if not names and text.get("mtp_hybrid_override_pattern"):
        names = [NEMOTRON_H_LETTERS.get(letter, "") for letter in str(text["mtp_hybrid_override_pattern"])]
    names = [str(name) for name in names or _NEMOTRON_H_DEFAULT_BLOCKS]
    return tuple(_BLOCK_NAMES[name] for name in names if name in _BLOCK_NAMES)
