"""Reads a Hugging Face model folder (config.json and safetensors headers only) into a ModelInfo."""

from __future__ import annotations

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
    gguf_model_name,
    gguf_param_counts,
    read_gguf,
)
from engine.model.header_counts import (
    DROPPED_PARTS,
    count_from_headers,
    layer_sizes_from_headers,
    mtp_prefixes,
    unquantized_linears,
)
from engine.model.hub_cache import cached_repo_id
from engine.model.moe_layout import MoeLayout
from engine.model.param_count import active_params, decoder_layer_shapes, model_shapes
from engine.model.remote_config import remote_config_class
from engine.model.safetensors_headers import read_safetensors_headers, weight_files
from engine.model.shared_kv_layers import kv_shared_weight_prefixes
from engine.model.vision_params import has_towers, vision_read


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
        vision_guessed: towers of a model type quant-tui has not read in vLLM: a generic-ViT estimate (off by a
            few %), or 0 where the config has no vision width to estimate from.
        remote_config: the checkpoint's own config class ("module.Class") when vLLM can read the config
            only by running it (``--trust-remote-code``); None when transformers or vLLM has a class.
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
    vision_guessed: bool = False
    remote_config: str | None = None
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
        """The GGUF model's name, the folder name, or the repo name for a Hugging Face cache snapshot."""
        if self.gguf_files:  # a folder (or repo) of llama.cpp files holds one file per type
            return gguf_model_name(self.gguf_files[0])
        repo = cached_repo_id(self.path)
        return repo.split("/", 1)[-1] if repo else self.path.name

    @property
    def is_moe(self) -> bool:
        """Whether the model routes tokens to experts."""
        return bool(self.num_experts and self.num_experts > 1)


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


def inspect_model(folder: Path) -> ModelInfo:
    """Reads config.json and the safetensors headers of a local model folder.

    Args:
        folder: a Hugging Face model folder (use ``engine.model.reference.resolve_model`` for ids).

    Returns:
        What the model is, with exact counts when weights are present, estimates otherwise.

    Raises:
        ModelError: the folder, its config or a weights file cannot be used.
    """
    chosen = folder if folder.suffix == ".gguf" and folder.is_file() else None
    folder = folder.parent if chosen else folder
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist; pass a Hugging Face model folder or 'demo'")
    safetensors = [] if chosen else weight_files(folder)
    gguf_files = () if safetensors else gguf_model_files(folder, chosen)
    gguf = read_gguf(gguf_files) if gguf_files else None  # a damaged file says so before its config
    # llama.cpp repos ship a GGUF file without config.json: vLLM reads the config from the file.
    has_config = (folder / "config.json").is_file()
    config = config_from_gguf(gguf_files) if gguf_files and not has_config else load_config(folder)
    arch = read_architecture(config, folder)
    stored = read_safetensors_headers(safetensors)
    # KV-sharing layers' K/V tensors and Phi-4-MM's LoRA adapters are on disk (weight_bytes, dtypes) but never loaded.
    dropped = kv_shared_weight_prefixes(arch.attention.kv_shared_layers)
    headers = [
        header
        for header in stored
        if not header.name.startswith(dropped) and not any(part in header.name for part in DROPPED_PARTS)
    ]
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
        vision_guessed=source == "estimate" and has_towers(arch.config) and not vision_read(arch.config),
        remote_config=remote_config_class(arch.config),
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
