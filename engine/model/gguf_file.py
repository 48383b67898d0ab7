"""Reads a GGUF checkpoint's tensor table (names, types, sizes) through the gguf library, no tensor data."""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelError
from engine.model.hub_cache import cached_repo_id
from engine.model.param_count import ParamCounts

# llama.cpp's split files: "<name>-00001-of-00003.gguf" (gguf-split); the set is one model.
_SPLIT = re.compile(r"^(?P<stem>.+)-\d{5}-of-\d{5}$")
# A vision projector beside a language model (llama.cpp's mmproj files) is no second model.
_PROJECTOR = "mmproj"
_LAYER = re.compile(r"^blk\.(\d+)\.")
# llama.cpp's type names as repos end file names with them: Q4_K_M, IQ3_XXS, Q8_0, F16, BF16, TQ1_0.
_TYPE_SUFFIX = re.compile(r"(?:^|[-.])((?:I?Q|TQ|BF|F)\d\w*)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class GgufTensor:
    """One tensor of a GGUF file, as its header describes it.

    Attributes:
        name: llama.cpp's name, e.g. "blk.3.attn_q.weight", "token_embd.weight".
        type_name: the GGML type, e.g. "Q4_K", "Q6_K", "F32".
        shape: GGML's order: the row length first ([in_features, out_features(, experts)]).
        n_elements: the weights it holds.
        n_bytes: its bytes in the file (blocks with their scales).
    """

    name: str
    type_name: str
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int

    @property
    def bits(self) -> float:
        """Bits per weight in the file (Q4_K: 144 B per 256 weights = 4.5)."""
        return 8 * self.n_bytes / self.n_elements if self.n_elements else 0.0


@dataclass(frozen=True, slots=True)
class GgufCheckpoint:
    """The tensors of one GGUF model (one file or one split set) and the type llama.cpp says it is.

    Attributes:
        files: the model's files, in order.
        tensors: every tensor of those files.
        file_type: llama.cpp's name for the mix, e.g. "Q4_K_M"; "" when the file does not say.
    """

    files: tuple[Path, ...]
    tensors: tuple[GgufTensor, ...]
    file_type: str

    @property
    def total_bytes(self) -> int:
        """Bytes of every tensor, as stored."""
        return sum(tensor.n_bytes for tensor in self.tensors)

    def tensor(self, name: str) -> GgufTensor | None:
        """The tensor called ``name``, if the file has it."""
        return next((tensor for tensor in self.tensors if tensor.name == name), None)

    def loaded_bytes(self, num_layers: int) -> int:
        """Bytes of the tensors plain serving loads: all but MTP layers (``blk.N`` from ``num_layers`` on)."""
        return sum(tensor.n_bytes for tensor in self.tensors if (gguf_layer(tensor) or 0) < num_layers)

    @property
    def vocab_bits(self) -> tuple[float, float]:
        """(token_embd, output) bits per weight; a tied model's one matrix gives both."""
        embedding, output = self.tensor("token_embd.weight"), self.tensor("output.weight")
        embedding_bits = embedding.bits if embedding else 16.0
        return embedding_bits, output.bits if output else embedding_bits


def gguf_model_files(folder: Path, chosen: Path | None = None) -> tuple[Path, ...]:
    """The GGUF files of the one model in ``folder``, or of ``chosen``'s model (empty when none).

    Raises:
        ModelError: the folder holds several GGUF models (llama.cpp repos ship one file per type)
            and none was chosen.
    """
    files = sorted(path for path in folder.glob("*.gguf") if _PROJECTOR not in path.name.lower())
    if chosen is not None:
        return tuple(path for path in files if gguf_model_name(path) == gguf_model_name(chosen))
    models = {gguf_model_name(path) for path in files}
    if len(models) > 1:
        names = ", ".join(path.name for path in files[:4]) + (", ..." if len(files) > 4 else "")
        raise ModelError(
            f"{folder} holds {len(models)} GGUF models ({names}); "
            f"pass the one to serve: --model {_model_reference(folder, files[0])}"
        )
    return tuple(files)


def _model_reference(folder: Path, file: Path) -> str:
    """How to name ``file`` for --model: ``org/name:TYPE`` inside a Hugging Face cache snapshot, else its path."""
    repo = cached_repo_id(folder)
    return f"{repo}:{gguf_type_name(file)}" if repo else str(folder / file.name)


def gguf_file_of_type(folder: Path, file_type: str) -> Path:
    """The GGUF file of ``file_type`` (vLLM's ``repo_id:quant_type``, e.g. "Q4_K_M") in a repo's folder.

    Raises:
        ModelError: no file of that type is there; the message lists the types that are.
    """
    files = sorted(path for path in folder.rglob("*.gguf") if _PROJECTOR not in path.name.lower())
    # The type ends at a separator, so Q4_K does not pick Q4_K_M's file.
    pattern = re.compile(rf"(?<![A-Za-z0-9]){re.escape(file_type)}(?![A-Za-z0-9_])", re.IGNORECASE)
    matches = [path for path in files if pattern.search(path.name)]
    if not matches:
        types = sorted({gguf_type_name(path) for path in files}) or ["none"]
        raise ModelError(
            f"no {file_type} GGUF file in {folder}; the types there: {', '.join(types)}",
            f"pick one of them after the ':', or download it first (hf download REPO --include '*{file_type}*')",
        )
    return matches[0]


def config_from_gguf(files: tuple[Path, ...]) -> dict[str, Any]:
    """The config a lone GGUF model's metadata gives (no config.json beside it), as vLLM reads it.

    transformers' GGUF reader (``PretrainedConfig.get_config_dict(..., gguf_file=...)``) maps the
    metadata to config.json's keys; a config without ``architectures`` gets its model type's causal-LM
    class, as vLLM's GGUF path does.

    Raises:
        ModelError: the metadata names an architecture transformers cannot read from GGUF, or lacks
            the model's shape (transformers would fill in its config class's defaults).
    """
    folder = files[0].parent
    try:
        from transformers import PretrainedConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        # Its warning about keys the metadata lacks would print beside quant-tui's one-line error below.
        reader_log = logging.getLogger("transformers.modeling_gguf_pytorch_utils")
        level = reader_log.level
        reader_log.setLevel(logging.ERROR)
        try:
            config, _ = PretrainedConfig.get_config_dict(str(folder), gguf_file=files[0].name)
        finally:
            reader_log.setLevel(level)
    except ImportError:
        raise ModelError(
            f"no config.json in {folder}; put the original model's config.json beside the GGUF file"
        ) from None
    except (ValueError, KeyError, IndexError, TypeError, struct.error, OSError) as error:
        raise ModelError(
            f"cannot read a model config from {files[0].name} ({error}); "
            "download the file again, or put the original model's config.json beside it"
        ) from None
    missing = [key for key in ("num_hidden_layers", "hidden_size", "vocab_size") if key not in config]
    if missing:
        raise ModelError(
            f"cannot read a model config from {files[0].name} (its metadata has no {', '.join(missing)}); "
            "put the original model's config.json beside the GGUF file"
        )
    if not config.get("architectures") and config.get("model_type") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        config["architectures"] = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config["model_type"]]]
    return config


def tokenizer_folder(folder: Path) -> str | None:
    """``folder`` when it holds a Hugging Face tokenizer, which vLLM's GGUF docs advise over the file's own."""
    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
    return str(folder) if any((folder / name).is_file() for name in names) else None


def gguf_type_name(path: Path) -> str:
    """The GGML type a file's name ends with: "Q4_K_M" for Qwen3-8B-Q4_K_M.gguf and llama-2-7b.Q4_K_M.gguf."""
    name = gguf_model_name(path)
    found = _TYPE_SUFFIX.search(name)
    return found.group(1) if found else name


def gguf_model_name(path: Path) -> str:
    """The model a GGUF file is (its name without ``.gguf`` and a split part's ``-00001-of-00003``)."""
    found = _SPLIT.match(path.stem)
    return found.group("stem") if found else path.stem


def read_gguf(files: tuple[Path, ...]) -> GgufCheckpoint:
    """Reads the tensor tables of ``files`` (memory-mapped headers only).

    Raises:
        ModelError: a file is not a GGUF file gguf can read (truncated, another format, a newer version).
    """
    from gguf import GGUFReader, LlamaFileType

    tensors: list[GgufTensor] = []
    file_type = ""
    for path in files:
        try:
            reader = GGUFReader(path)
        except (ValueError, KeyError, IndexError, TypeError, struct.error, OSError) as error:
            raise ModelError(
                f"{path} is not a readable GGUF file ({error}); download it again or pass a safetensors folder"
            ) from None
        tensors += [
            GgufTensor(
                tensor.name,
                tensor.tensor_type.name,
                tuple(int(size) for size in tensor.shape),
                int(tensor.n_elements),
                int(tensor.n_bytes),
            )
            for tensor in reader.tensors
        ]
        field = reader.get_field("general.file_type")
        if field is not None and not file_type:
            value = int(field.contents())
            known = value in LlamaFileType._value2member_map_ and value != LlamaFileType.GUESSED
            file_type = LlamaFileType(value).name.removeprefix("MOSTLY_") if known else ""
    return GgufCheckpoint(files, tuple(tensors), file_type)


def _is_linear(tensor: GgufTensor) -> bool:
    """A projection matrix a quantizer would target (llama.cpp's 2-D and expert 3-D ``blk.*`` weights)."""
    if not tensor.name.startswith("blk.") or not tensor.name.endswith(".weight") or len(tensor.shape) < 2:
        return False
    # The router (ffn_gate_inp) and the Mamba convolution stay out, as in quant-tui's safetensors roles.
    return "ffn_gate_inp" not in tensor.name and "ssm_conv1d" not in tensor.name


def gguf_layer(tensor: GgufTensor) -> int | None:
    """The decoder layer ``tensor`` belongs to (``blk.N.``), None outside the layers."""
    found = _LAYER.match(tensor.name)
    return int(found.group(1)) if found else None


def gguf_param_counts(checkpoint: GgufCheckpoint, num_layers: int) -> ParamCounts:
    """Parameters by role; ``blk.N`` past the decoder's ``num_layers`` are MTP layers, counted apart."""
    linear = linear_out = embedding = lm_head = other = mtp = 0
    for tensor in checkpoint.tensors:
        layer = gguf_layer(tensor)
        if layer is not None and layer >= num_layers:
            mtp += tensor.n_elements
        elif tensor.name == "token_embd.weight":
            embedding += tensor.n_elements
        elif tensor.name == "output.weight":
            lm_head += tensor.n_elements
        elif _is_linear(tensor):
            linear += tensor.n_elements
            rows = tensor.shape[1] * (tensor.shape[2] if len(tensor.shape) > 2 else 1)
            linear_out += rows
        else:
            other += tensor.n_elements
    total = linear + embedding + lm_head + other
    return ParamCounts(total, linear, linear_out, embedding, lm_head, other, 0, mtp)


def gguf_layer_sizes(
    checkpoint: GgufCheckpoint, num_layers: int
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """Each decoder layer's (parameters, Linear parameters, stored bytes); None when a layer is missing."""
    params, linear, stored = [0] * num_layers, [0] * num_layers, [0] * num_layers
    for tensor in checkpoint.tensors:
        layer = gguf_layer(tensor)
        if layer is None or layer >= num_layers:
            continue
        params[layer] += tensor.n_elements
        linear[layer] += tensor.n_elements if _is_linear(tensor) else 0
        stored[layer] += tensor.n_bytes
    if not all(stored):
        return None
    return tuple(params), tuple(linear), tuple(stored)
