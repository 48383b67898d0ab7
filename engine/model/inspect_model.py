"""Reads a Hugging Face model folder (config.json and safetensors headers only) into a ModelInfo."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from engine.errors import ModelError
from engine.model.architecture import Architecture, AttentionLayout, ModelShape, read_architecture
from engine.model.checkpoint_size import WeightLayout, checkpoint_bytes, weight_layout
from engine.model.config_json import load_config
from engine.model.existing_quantization import ExistingQuantization, detect_quantization
from engine.model.gguf_file import (
    config_from_gguf,
    gguf_layer_sizes,
    gguf_model_files,
    gguf_param_counts,
    read_gguf,
)
from engine.model.moe_layout import MoeLayout
from engine.model.param_count import ParamCounts, active_params, decoder_layer_shapes, model_shapes
from engine.model.safetensors_headers import TensorHeader, read_safetensors_headers, weight_files
from engine.model.shared_kv_layers import kv_shared_weight_prefixes

TensorRole = Literal["linear", "embedding", "lm_head", "router", "norm", "bias", "vision", "other"]

_VISION_PARTS = ("vision_tower", "vision_model", "visual.", "multi_modal_projector", "mm_projector", "audio")
_ROUTER_SUFFIXES = (
    ".mlp.gate.weight",
    ".block_sparse_moe.gate.weight",
    ".router.weight",
    ".mlp.router.weight",
    ".mixer.gate.weight",  # Nemotron-H's MoE router (NemotronHMoE.gate)
    # Qwen-MoE's one-row gate of the shared expert: a ReplicatedLinear vLLM builds unquantized.
    ".shared_expert_gate.weight",
)
# Gated DeltaNet's and Mamba's causal convolution: vLLM builds it without the quantization config.
_CONVOLUTION_PARTS = (".conv1d.",)
# Multi-token-prediction weights stored apart from the decoder layers (Qwen3-Next, Qwen3.5), which
# vLLM's WeightsMapper drops ("mtp.": None) for plain serving.
_MTP_ROOT = "mtp."


@dataclass(frozen=True, slots=True)
class ModelInfo(ModelShape):
    """What quant-tui knows about a model, read without loading any tensor data.

    Attributes:
        params: parameters vLLM loads for plain serving (exact from safetensors headers, else
            estimated from config.json): vision towers included, MTP layers not.
        params_source: "safetensors" or "gguf" when counted from the weights' headers, "estimate"
            from the config.
        linear_params: parameters in the Linear layers a quantizer would target.
        linear_out_features: the sum of output features over those layers (one scale per row).
        unquantized_params: embeddings, lm_head, norms, biases, routers, vision tower: what stays 16-bit.
        weight_bytes: bytes the tensors take on disk (0 when only config.json is there).
        dtype_params: parameters per safetensors dtype.
        attention: what each layer caches per token (see ``attention_summary`` for the UI).
        moe: the expert layout of an MoE model.
        loaded_weight_bytes: bytes of the weights vLLM loads as the checkpoint stores them (exact
            from the headers without MTP tensors or KV-sharing layers' K/V; config-only: estimated).
        weight_layout: how the checkpoint stores its weights, e.g. "MXFP4 experts", "FP8 block 128×128".
        vision_params: parameters of vision/audio towers and projectors (in ``params``).
        mtp_params: multi-token-prediction parameters, not loaded for plain serving (not in ``params``).
        active_params: parameters one token uses (routed experts it skips left out; no vision tower).
        layer_params: each decoder layer's parameters (layers differ: dense vs MoE MLPs, hybrids).
        layer_linear_params: of those, the Linear weights a quantizer would target.
        layer_bytes: each decoder layer's bytes as the checkpoint stores them (``loaded_weight_bytes``'
            share): from the headers when every layer is found there, else from the format.
        gguf_files: the GGUF model's files when the folder holds one and no safetensors weights
            (vLLM is given the file, not the folder).
        vocab_bits: (embed_tokens, lm_head) bits per weight when the checkpoint keeps them quantized
            (a GGUF file's types, which its vLLM plugin loads as they are); None: 16-bit.
    """

    path: Path
    params: int
    params_source: Literal["safetensors", "gguf", "estimate"]
    linear_params: int
    linear_out_features: int
    unquantized_params: int
    weight_bytes: int
    dtype_params: dict[str, int] = field(default_factory=dict)
    num_experts: int | None = None
    experts_per_token: int | None = None
    is_multimodal: bool = False
    quantization: ExistingQuantization | None = None
    attention: AttentionLayout | None = None
    moe: MoeLayout | None = None
    loaded_weight_bytes: int = 0
    weight_layout: str = ""
    vision_params: int = 0
    mtp_params: int = 0
    active_params: int = 0
    layer_params: tuple[int, ...] = ()
    layer_linear_params: tuple[int, ...] = ()
    layer_bytes: tuple[int, ...] = ()
    gguf_files: tuple[Path, ...] = ()
    vocab_bits: tuple[float, float] | None = None

    @property
    def attention_summary(self) -> str:
        """What the KV cache holds per token, honestly: "MLA latent 576 ..." rather than "128 KV heads"."""
        if self.attention is None:
            return f"{self.num_kv_heads} KV heads × {self.head_dim}"
        return self.attention.description

    @property
    def gguf_file(self) -> Path | None:
        """The one file vLLM is given for a single-file GGUF model (None: no GGUF, or a split set)."""
        return self.gguf_files[0] if len(self.gguf_files) == 1 else None

    @property
    def name(self) -> str:
        """The folder name, or the repo name for a Hugging Face cache snapshot."""
        parts = self.path.parts
        if "snapshots" in parts:
            repo_folder = parts[parts.index("snapshots") - 1]
            if repo_folder.startswith("models--"):
                return repo_folder.removeprefix("models--").split("--", 1)[-1]
        return self.path.name

    @property
    def is_moe(self) -> bool:
        """Whether the model routes tokens to experts."""
        return bool(self.num_experts and self.num_experts > 1)


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
    Nemotron-H's ``mtp.`` module (vLLM's WeightsMapper maps ``mtp.`` to None for plain serving).
    """
    layers = range(arch.num_layers, arch.num_layers + arch.attention.mtp_layers)
    numbered = tuple(
        f"{root}layers.{index}." for index in layers for root in ("model.", "", "model.language_model.")
    )
    return (*numbered, _MTP_ROOT)


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


def layer_sizes_from_config(
    arch: Architecture, layout: WeightLayout
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Each decoder layer's (parameters, Linear parameters, bytes stored as ``layout``), from the config."""
    layers = decoder_layer_shapes(arch)
    counts = [shapes.counts() for shapes in layers]
    return (
        tuple(count.total for count in counts),
        tuple(count.linear for count in counts),
        tuple(checkpoint_bytes(shapes, layout, index).total for index, shapes in enumerate(layers)),
    )


def count_from_headers(
    headers: list[TensorHeader], skip_prefixes: tuple[str, ...] = (), unquantized: tuple[str, ...] = ()
) -> ParamCounts:
    """Counts parameters by role from tensor headers (packed 4-bit weights counted as unpacked).

    Tensors whose names start with one of ``skip_prefixes`` (MTP layers) are counted apart in ``mtp``;
    those under ``unquantized``'s name parts count as other parameters, not Linear weights.
    """
    linear = linear_out = embedding = lm_head = other = vision = mtp = 0
    for header in headers:
        if header.name.endswith(_QUANT_METADATA_SUFFIXES):
            continue  # quantization metadata, not parameters
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


def inspect_model(folder: Path) -> ModelInfo:
    """Reads config.json and the safetensors headers of a local model folder.

    Args:
        folder: a Hugging Face model folder (use ``engine.model.reference.resolve_model`` for ids).

    Returns:
        What the model is, with exact counts when weights are present, estimates otherwise.

    Raises:
        ModelError: the folder, its config or a weights file cannot be used.
    """
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist; pass a Hugging Face model folder or 'demo'")
    # llama.cpp repos ship a GGUF file without config.json: vLLM reads the config from the file.
    gguf_config = None if (folder / "config.json").is_file() else config_from_gguf(folder)
    config = gguf_config or load_config(folder)
    arch = read_architecture(config, folder)
    stored = read_safetensors_headers(weight_files(folder))
    # KV-sharing layers' K/V tensors are on disk (weight_bytes, dtypes) but never loaded.
    dropped = kv_shared_weight_prefixes(arch.attention.kv_shared_layers)
    headers = [header for header in stored if not header.name.startswith(dropped)]
    gguf_files = () if stored else gguf_model_files(folder)
    gguf = read_gguf(gguf_files) if gguf_files else None
    quantization = detect_quantization(config, folder, stored, gguf)
    shapes = model_shapes(arch)
    layout = weight_layout(config, folder)
    if stored:
        skip = mtp_prefixes(arch)
        counts = count_from_headers(headers, skip, unquantized_linears(arch))
        source: Literal["safetensors", "gguf", "estimate"] = "safetensors"
        dtype_params = Counter[str]()
        for header in stored:
            dtype_params[header.dtype] += header.numel
        weight_bytes = sum(header.nbytes for header in stored)
        loaded_bytes = sum(header.nbytes for header in headers if not header.name.startswith(skip))
    elif gguf is not None:  # the GGUF plugin loads the file's blocks as they are
        counts = gguf_param_counts(gguf, arch.num_layers)
        source = "gguf"
        dtype_params = Counter()
        for tensor in gguf.tensors:
            dtype_params[tensor.type_name] += tensor.n_elements
        weight_bytes = gguf.total_bytes
        loaded_bytes = gguf.loaded_bytes(arch.num_layers)
    else:
        counts = shapes.counts()
        source = "estimate"
        dtype_params = Counter()
        weight_bytes = 0
        loaded_bytes = checkpoint_bytes(shapes, layout).total
    tied = arch.tie_word_embeddings if source == "estimate" else counts.lm_head == 0
    if stored:
        layers = layer_sizes_from_headers(
            headers, arch.num_layers, mtp_prefixes(arch), unquantized_linears(arch)
        )
    else:
        layers = gguf_layer_sizes(gguf, arch.num_layers) if gguf is not None else None
    layer_params, layer_linear, layer_bytes = layers or layer_sizes_from_config(arch, layout)
    attention = arch.attention
    # A checkpoint saved without its MTP weights (transformers drops mtp.*).
    if source != "estimate" and not counts.mtp:
        attention = replace(attention, mtp_layers=0)
    return ModelInfo(
        **(arch.shape() | {"tie_word_embeddings": tied}),
        path=folder,
        params=counts.total,
        params_source=source,
        linear_params=counts.linear,
        linear_out_features=counts.linear_out_features,
        unquantized_params=counts.total - counts.linear,
        weight_bytes=weight_bytes,
        dtype_params=dict(dtype_params),
        num_experts=arch.num_experts,
        experts_per_token=arch.experts_per_token,
        is_multimodal=arch.is_multimodal,
        quantization=quantization,
        attention=attention,
        moe=arch.moe,
        loaded_weight_bytes=loaded_bytes,
        weight_layout=layout.name,
        vision_params=counts.vision,
        mtp_params=counts.mtp,
        active_params=active_params(arch) if source == "estimate" else counts.total - counts.vision,
        layer_params=layer_params,
        layer_linear_params=layer_linear,
        layer_bytes=layer_bytes,
        gguf_files=gguf_files,
        vocab_bits=gguf.vocab_bits if gguf is not None else None,
    )


def human_params(count: int) -> str:
    """Formats a parameter count the way model cards do: 8.03B, 494M, 5.2M."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            value = count / scale
            return f"{value:.3g}{suffix}" if value < 100 else f"{value:.0f}{suffix}"
    return str(count)
