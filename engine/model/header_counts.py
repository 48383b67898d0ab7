"""Counts parameters and bytes by role from safetensors headers, as vLLM loads the tensors they name."""

from __future__ import annotations

import re
from typing import Literal

from engine.model.architecture import Architecture
from engine.model.param_count import ParamCounts
from engine.model.safetensors_headers import TensorHeader

TensorRole = Literal["linear", "embedding", "lm_head", "router", "norm", "bias", "vision", "other"]

_VISION_PARTS = (
    "vision_tower",
    "vision_model",
    "visual.",
    "multi_modal_projector",
    "mm_projector",
    "audio",
    "embed_vision",  # Gemma 4's vision projection (gemma4_mm.py)
    "vision_embedder",  # Gemma 4 Unified's patch embedder (gemma4_unified.py)
    "resampler_model",  # ERNIE-4.5-VL's (ernie45_vl.py)
    "embed_tokens_extend",  # Phi-4-multimodal's image and audio embeddings (phi4mm.py)
    "visual_tokenizer",  # Ovis's ViT and head (ovis2_5.py)
    "vte.weight",  # Ovis's visual embedding table
)
# Phi-4-multimodal's LoRA adapters, stored beside their base layers; phi4mm.py's WeightsMapper drops them ("lora").
DROPPED_PARTS = (".lora_A.", ".lora_B.")
_ROUTER_SUFFIXES = (
    ".mlp.gate.weight",
    ".block_sparse_moe.gate.weight",
    ".router.weight",
    ".mlp.router.weight",
    ".mixer.gate.weight",  # Nemotron-H's MoE router (NemotronHMoE.gate)
    ".feed_forward.gate.weight",  # LFM2-MoE's router (Lfm2MoeSparseMoeBlock.gate)
    # Qwen-MoE's one-row gate of the shared expert: a ReplicatedLinear vLLM builds unquantized.
    ".shared_expert_gate.weight",
)
# Gated DeltaNet's and Mamba's causal convolution, LFM2's ShortConv one (``conv.conv``, which vLLM loads as
# ``short_conv.conv``): vLLM builds them without the quantization config.
_CONVOLUTION_PARTS = (".conv1d.", ".conv.conv.")
# Multi-token-prediction weights stored apart from the decoder layers (Qwen3-Next, Qwen3.5), which
# vLLM's WeightsMapper drops ("mtp.": None) for plain serving.
_MTP_ROOT = "mtp."
# ERNIE-4.5's model.mtp_block.0., mtp_emb_norm.0., ... (ernie45_moe.py's WeightsMapper drops every name with "mtp").
_ERNIE_MTP_ROOT = "model.mtp_"


def classify_tensor(name: str, shape: list[int]) -> TensorRole:
    """Says what a checkpoint tensor is, which decides whether a quantizer touches it."""
    if any(part in name for part in _VISION_PARTS):
        return "vision"
    # Nemotron-H (and Mamba) checkpoints: "backbone.embeddings.weight" (transformers 5: "model.embeddings").
    embeddings = ("wte.weight", "word_embeddings.weight", "embed.weight", "backbone.embeddings.weight")
    if "embed_tokens" in name or name.endswith((*embeddings, "model.embeddings.weight")):
        return "embedding"
    if name.startswith("lm_head") or name.endswith(("lm_head.weight", "output.weight")):
        return "lm_head"
    if name.endswith(_ROUTER_SUFFIXES):
        return "router"
    if name.endswith(".bias"):
        return "bias"
    if "norm" in name or len(shape) == 1:
        return "norm"
    if any(part in name for part in _CONVOLUTION_PARTS):
        return "other"
    if len(shape) >= 2 and name.endswith(".weight"):
        return "linear"
    return "other"


_QUANT_METADATA_SUFFIXES = (
    "_scale",
    "_scales",
    "_scale_inv",
    "_zero_point",
    "_shape",
    ".g_idx",
    ".qzeros",
    "_scale_2",
    "_global_scale",
)


def mtp_prefixes(arch: Architecture) -> tuple[str, ...]:
    """Name prefixes of the multi-token-prediction weights, which vLLM skips for plain serving.

    DeepSeek-style layers past the decoder's (``model.layers.61.``), and Qwen3-Next's, Qwen3.5's and
    Nemotron-H's ``mtp.`` module (vLLM's WeightsMapper maps ``mtp.`` to None for plain serving), and ERNIE-4.5's
    ``model.mtp_*`` modules.
    """
    layers = range(arch.num_layers, arch.num_layers + arch.attention.mtp_layers)
    numbered = tuple(
        f"{root}layers.{index}." for index in layers for root in ("model.", "", "model.language_model.")
    )
    return (*numbered, _MTP_ROOT, _ERNIE_MTP_ROOT)


def _parameters_of(header: TensorHeader) -> int:
    """Parameters a tensor holds (packed 4-bit values unpacked; 0 for quantization metadata)."""
    if header.name.endswith(_QUANT_METADATA_SUFFIXES):
        return 0
    numel = header.numel
    if header.name.endswith(("weight_packed", ".qweight")) and header.dtype == "I32":
        numel *= 8  # eight 4-bit values per int32
    elif header.name.endswith(("weight_packed", "_blocks")) and header.dtype == "U8":
        numel *= 2  # two 4-bit values per byte (NVFP4, MXFP4)
    return numel


def unquantized_linears(arch: Architecture) -> tuple[str, ...]:
    """Name parts of Linear weights vLLM builds without the quantization config, which stay 16-bit.

    Jamba's Mamba1 mixer (vllm/model_executor/layers/mamba/mamba_mixer.py::MambaMixer passes no
    quant_config to in_proj, x_proj, dt_proj, out_proj); Mamba2's in_proj / out_proj are quantized.
    """
    if arch.attention.state is None or arch.attention.state.mixer != "mamba1":
        return ()
    return tuple(f".mamba.{name}." for name in ("in_proj", "x_proj", "dt_proj", "out_proj"))


def _role_of(header: TensorHeader, unquantized: tuple[str, ...] = ()) -> TensorRole:
    """``classify_tensor``'s role, with MXFP4 expert blocks (gpt-oss's ``*_blocks``) as Linear weights.

    Weights under one of ``unquantized``'s name parts (``unquantized_linears``) are "other".
    """
    role = classify_tensor(header.name, list(header.shape))
    if role == "linear" and any(part in header.name for part in unquantized):
        return "other"
    if role == "other" and header.name.endswith("_blocks") and ".experts." in header.name:
        return "linear"
    return role


# A decoder layer's tensors: "model.layers.3.", "model.language_model.layers.3.", "transformer.h.3.".
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")


def layer_sizes_from_headers(
    headers: list[TensorHeader],
    num_layers: int,
    skip_prefixes: tuple[str, ...] = (),
    unquantized: tuple[str, ...] = (),
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """Each decoder layer's (parameters, Linear parameters, stored bytes), summed over its tensors.

    Vision-tower layers and MTP layers (indices past ``num_layers``, or names starting with one of
    ``skip_prefixes``: ``mtp.layers.0.`` is no decoder layer 0) are not decoder layers. None when
    some layer has no tensor under a name quant-tui recognises (then sizes come from the config).
    """
    params, linear, stored = [0] * num_layers, [0] * num_layers, [0] * num_layers
    for header in headers:
        found = _LAYER_INDEX.search(header.name)
        if found is None or header.name.startswith(skip_prefixes):
            continue
        role = _role_of(header, unquantized)
        index = int(found.group(1))
        if role == "vision" or index >= num_layers:
            continue
        stored[index] += header.nbytes
        numel = _parameters_of(header)
        params[index] += numel
        linear[index] += numel if role == "linear" else 0
    if not all(stored):
        return None
    return tuple(params), tuple(linear), tuple(stored)


def count_from_headers(
    headers: list[TensorHeader], skip_prefixes: tuple[str, ...] = (), unquantized: tuple[str, ...] = ()
) -> ParamCounts:
    """Counts parameters by role from tensor headers (packed 4-bit weights counted as unpacked).

    Tensors whose names start with one of ``skip_prefixes`` (MTP layers) are counted apart in ``mtp``;
    those under ``unquantized``'s name parts count as other parameters, not Linear weights.
    """
    linear = linear_out = embedding = lm_head = other = vision = mtp = 0
    for header in headers:
        if header.name.endswith(_QUANT_METADATA_SUFFIXES) or any(
            part in header.name for part in DROPPED_PARTS
        ):
            continue  # quantization metadata, not parameters; adapters vLLM does not load
        numel = _parameters_of(header)
        if header.name.startswith(skip_prefixes):
            mtp += numel
            continue
        role = _role_of(header, unquantized)
        if role == "linear":
            linear += numel
            out_features = header.shape[0] if not header.name.endswith(".qweight") else header.shape[1]
            linear_out += out_features * (header.shape[0] if len(header.shape) >= 3 else 1)
        elif role == "embedding":
            embedding += numel
        elif role == "lm_head":
            lm_head += numel
        else:
            other += numel
            vision += numel if role == "vision" else 0
    return ParamCounts(
        linear + embedding + lm_head + other, linear, linear_out, embedding, lm_head, other, vision, mtp
    )
