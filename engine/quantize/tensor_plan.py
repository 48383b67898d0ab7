"""Decides what a data-free run does: which tensors to quantize or copy, the output layout, and the pre-flight checks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engine.errors import ModelError, QuantTuiError
from engine.model.architecture import read_architecture
from engine.model.config_json import load_config
from engine.model.existing_quantization import detect_quantization
from engine.model.header_counts import classify_tensor, unquantized_linears
from engine.model.safetensors_headers import (
    DTYPE_BYTES,
    TensorHeader,
    read_safetensors_headers,
    read_tensor_locations,
)
from engine.plan.methods import default_output_dir
from engine.plan.quantizable import quantize_refusal
from engine.quantize.ignore_patterns import fused_siblings, resolve_ignored
from engine.quantize.output_checks import check_disk_space, check_output
from engine.quantize.request import CALIBRATED_METHODS, METHODS, QuantizeRequest
from engine.quantize.schemes import FLOAT_DTYPES, SCHEMES, Scheme

# Roles of the copied weights the config's ``ignore`` lists, so vLLM's scheme matching leaves them 16-bit too:
# routers, shared-expert gates (quant_config=None in vLLM), "other" ones (conv1d, Jamba's Mamba1 projections).
_IGNORED_ROLES = ("linear", "lm_head", "router", "other")
# Files that are weights in another format, or that the run rewrites: never copied.
_NOT_COPIED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx")
_REWRITTEN_FILES = ("config.json", "README.md", "model.safetensors.index.json", "recipe.yaml")
PARTIAL_MARKER = ".partial-"


@dataclass(frozen=True)
class SourceTensor:
    """One tensor of the source checkpoint and what the run does with it.

    Attributes:
        action: "quantize" replaces the weight with the scheme's tensors; "copy" keeps it as is.
        outputs: the output tensors it becomes (itself, for a copy).
    """

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    action: Literal["quantize", "copy"]
    outputs: tuple[TensorHeader, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the source tensor's data."""
        return TensorHeader(self.name, self.dtype, self.shape).nbytes

    @property
    def output_bytes(self) -> int:
        """Bytes of the tensors it becomes."""
        return sum(spec.nbytes for spec in self.outputs)


@dataclass(frozen=True)
class QuantizePlan:
    """Everything a data-free run will do, decided before any byte is written.

    Attributes:
        config: the source config.json.
        tensors: the source tensors in reading order (file, then position in the file).
        unquantized_linear: module names of Linear-like weights left unquantized (the
            ``ignore`` list of quantization_config): lm_head, MoE routers, the weights vLLM builds
            without the quantization config (``header_counts.unquantized_linears``, conv1d), the
            user's ``--ignore``.
        files_to_copy: tokenizer, generation config and other small files copied verbatim.
        estimated_output_bytes: tensor data plus copied files.
    """

    source: Path
    output: Path
    method: str
    scheme: Scheme
    config: dict[str, Any]
    model_type: str
    tensors: tuple[SourceTensor, ...]
    unquantized_linear: tuple[str, ...]
    files_to_copy: tuple[Path, ...]
    estimated_output_bytes: int

    @property
    def input_bytes(self) -> int:
        """Bytes of source tensor data."""
        return sum(tensor.nbytes for tensor in self.tensors)


def source_weight_files(folder: Path) -> list[Path]:
    """The safetensors files holding the model: those the index names, else every ``*.safetensors``.

    Raises:
        ModelError: no safetensors weights, or the index names a missing file.
    """
    import json

    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise ModelError(
                f"{index_path} is not a valid safetensors index; re-download the model"
            ) from None
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            raise ModelError(
                f"{folder} lacks {missing[0]} named by model.safetensors.index.json; re-download the model"
            )
        return [folder / name for name in names]
    files = sorted(path for path in folder.glob("*.safetensors") if PARTIAL_MARKER not in path.name)
    if len(files) > 1:
        # Mistral repos ship consolidated.safetensors beside the Hugging Face shards.
        files = [path for path in files if not path.name.startswith("consolidated")] or files
    if not files:
        other = sorted({path.suffix for path in folder.iterdir() if path.suffix in _NOT_COPIED_SUFFIXES})
        hint = f" (found {', '.join(other)} files; convert them to safetensors first)" if other else ""
        raise ModelError(f"no *.safetensors weights in {folder}{hint}")
    return files


def _check_block_shapes(name: str, shape: tuple[int, ...], scheme: Scheme, method: str) -> None:
    """vLLM loads a fused block-FP8 layer only when every part but the last is a whole number of blocks."""
    if scheme.block is None:
        return
    siblings = fused_siblings(name)
    if len(siblings) > 1 and name != siblings[-1] and shape[0] % scheme.block[0]:
        module = name.removesuffix(".weight")
        raise ModelError(
            f"{method} needs {module} to have a multiple of {scheme.block[0]} rows to be fused by vLLM, "
            f"but it has {shape[0]}; use fp8 (per-channel scales) instead"
        )


def _files_to_copy(source: Path) -> list[Path]:
    copied = []
    for path in sorted(source.iterdir()):
        if path.name.startswith(".") or path.name in _REWRITTEN_FILES:
            continue
        if path.suffix in _NOT_COPIED_SUFFIXES or path.name.endswith(".safetensors.index.json"):
            continue
        if path.is_file():
            copied.append(path)
    return copied


def _check_source_folder(source: Path) -> None:
    if not source.exists():
        raise ModelError(f"model folder {source} does not exist; pass a Hugging Face model folder or 'demo'")
    if not source.is_dir():
        raise ModelError(f"{source} is a file; pass the model's folder (the one holding config.json)")
    if not os.access(source, os.R_OK | os.X_OK):
        raise ModelError(f"cannot read {source} (permission denied); check its permissions")


def check_source(request: QuantizeRequest) -> tuple[dict[str, Any], str, list[Path]]:
    """The checks shared by every method: readable folder, config, supported text model, not quantized.

    Returns:
        The config, its model type and the weight files.

    Raises:
        QuantTuiError: the first problem found, in one line.
    """
    if request.method not in METHODS:
        raise QuantTuiError(f"unknown method {request.method!r}; choose one of {', '.join(METHODS)}")
    source = request.source
    _check_source_folder(source)
    arch = read_architecture(config := load_config(source), source)
    refusal = quantize_refusal(source.name, arch)
    if refusal is not None:
        raise ModelError(refusal)
    files = source_weight_files(source)
    headers = read_safetensors_headers(files)
    existing = detect_quantization(config, source, headers)
    if existing is not None:
        raise ModelError(
            f"{source.name} is already quantized ({existing.method}: {existing.scheme}); "
            "quantize the original 16-bit model instead"
        )
    return config, arch.model_type, files


def build_plan(request: QuantizeRequest) -> QuantizePlan:
    """Runs the pre-flight checks and decides every tensor's fate, reading only headers.

    Raises:
        QuantTuiError: the first problem found, in one line, before anything is written.
    """
    if request.method in CALIBRATED_METHODS:
        raise QuantTuiError(f"{request.method} is a calibrated method; it does not use the data-free planner")
    config, model_type, files = check_source(request)
    scheme = SCHEMES[request.method]
    source = request.source
    output = request.output or default_output_dir(source, request.method)

    entries: list[tuple[str, Path, str, tuple[int, ...]]] = []
    seen: dict[str, Path] = {}
    for path in files:
        # In file order, so each shard is read front to back.
        for name, location in read_tensor_locations(path).items():
            if name in seen:
                raise ModelError(
                    f"tensor {name} is in both {seen[name].name} and {path.name}; fix the checkpoint"
                )
            seen[name] = path
            entries.append((name, path, location.header.dtype, location.header.shape))

    # One source for what vLLM builds unquantized: classify_tensor's roles (routers, shared-expert
    # gates, conv1d) and unquantized_linears' name parts (Jamba's Mamba1 projections).
    kept_parts = unquantized_linears(read_architecture(config, source))

    def quantizable(name: str, dtype: str, shape: tuple[int, ...]) -> bool:
        if len(shape) != 2 or not name.endswith(".weight") or any(part in name for part in kept_parts):
            return False
        return classify_tensor(name, list(shape)) == "linear"

    linear_modules = [
        name.removesuffix(".weight") for name, _, dtype, shape in entries if quantizable(name, dtype, shape)
    ]
    if not linear_modules:
        raise ModelError(f"{source.name} has no Linear layer weights to quantize")
    ignored = resolve_ignored(linear_modules, request.ignore)

    tensors: list[SourceTensor] = []
    unquantized = {"lm_head"}
    for name, path, dtype, shape in entries:
        if dtype not in DTYPE_BYTES:
            raise ModelError(f"tensor {name} in {path.name} has dtype {dtype}, which quant-tui cannot copy")
        module = name.removesuffix(".weight")
        role = classify_tensor(name, list(shape))
        if quantizable(name, dtype, shape) and module not in ignored:
            if dtype not in FLOAT_DTYPES:
                raise ModelError(
                    f"weight {name} is {dtype}, not 16/32-bit float; quantize the original model"
                )
            if scheme.group_size is not None and shape[1] % scheme.group_size:
                raise ModelError(
                    f"{request.method} needs input sizes divisible by {scheme.group_size}, but {name} has "
                    f"{shape[1]}; pass --ignore {module} or use fp8/int8-w8a8"
                )
            _check_block_shapes(name, shape, scheme, request.method)
            outputs = tuple(TensorHeader(*spec) for spec in scheme.output_tensors(name, shape, dtype))
            tensors.append(SourceTensor(name, path, dtype, shape, "quantize", outputs))
            continue
        # conv1d weights are 3-D ([channels, 1, kernel]); a Linear weight is 2-D.
        if name.endswith(".weight") and role in _IGNORED_ROLES and (len(shape) == 2 or role == "other"):
            unquantized.add(module)
        tensors.append(SourceTensor(name, path, dtype, shape, "copy", (TensorHeader(name, dtype, shape),)))

    files_to_copy = _files_to_copy(source)
    check_output(source, output)
    estimate = sum(tensor.output_bytes for tensor in tensors) + sum(
        path.stat().st_size for path in files_to_copy
    )
    check_disk_space(output, estimate)
    return QuantizePlan(
        source=source,
        output=output,
        method=request.method,
        scheme=scheme,
        config=config,
        model_type=model_type,
        tensors=tuple(tensors),
        unquantized_linear=tuple(sorted(unquantized)),
        files_to_copy=tuple(files_to_copy),
        estimated_output_bytes=estimate,
    )
