"""Recognises a checkpoint that is already quantized (its quantization_config, files or tensor dtypes)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from engine.model.config_json import text_config
from engine.model.gguf_file import GgufCheckpoint
from engine.model.modelopt_config import (
    MODELOPT_FP8_ALGOS,
    load_error,
    mixed_algos,
    read_hf_quant_config,
    read_modelopt,
)
from engine.model.safetensors_headers import TensorHeader


@dataclass(frozen=True, slots=True)
class ExistingQuantization:
    """A quantization the checkpoint already carries.

    Attributes:
        method: the format: "compressed-tensors", "gptq", "awq", "fp8", "bitsandbytes", "gguf", ...
        scheme: a short human description, e.g. "FP8 W8A8" or "4-bit, group 128".
        recommend_as: the quant-tui method name it corresponds to, when there is one.
        quantizes_experts: whether vLLM gives the routed experts a quantized scheme (a compressed-tensors
            target reaches an expert projection its ignore list leaves); None when it can't be told
            (no expert tensors in the headers, or not compressed-tensors).
        load_error: why vLLM refuses the checkpoint's quantization config on every device, when it does.
        load_fix: what to do about ``load_error``, when the format has its own remedy.
    """

    method: str
    scheme: str
    recommend_as: str | None
    quantizes_experts: bool | None = None
    load_error: str | None = None
    load_fix: str | None = None


# (weights' type, bits, activations quantized, FP4's group size: vLLM's CompressedTensorsConfig
# _is_nvfp4_format / _is_mxfp4 tell NVFP4 (16) from MXFP4 (32) by it) -> (scheme, method served as);
# tests/plan/test_methods.py checks the methods against the registry (engine/model cannot import it).
COMPRESSED_TENSORS_METHODS: MappingProxyType[tuple[str, int, bool, int | None], tuple[str, str]] = (
    MappingProxyType(
        {
            ("float", 8, True, None): ("FP8 W8A8", "fp8"),
            # No input_activations: CompressedTensorsW8A16Fp8 on every GPU, never W8A8 (vllm_facts.CT_FP8_W8A16).
            ("float", 8, False, None): ("FP8 weight-only (W8A16)", "fp8-w8a16"),
            ("int", 8, True, None): ("INT8 W8A8", "int8-w8a8"),
            ("int", 8, False, None): ("INT8 weight-only (W8A16)", "w8a16"),
            ("int", 4, False, None): ("INT4 weight-only (W4A16)", "w4a16"),
            ("float", 4, True, 16): ("FP4 W4A4", "nvfp4"),
            ("float", 4, False, 16): ("FP4 weight-only", "nvfp4a16"),
            ("float", 4, True, 32): ("MXFP4 W4A4", "mxfp4"),
            ("float", 4, False, 32): ("MXFP4 weight-only", "mxfp4"),
        }
    )
)


def _granularity(weights: dict[str, Any]) -> str:
    """How the scales are laid out, as the scheme text adds it: ", group 128", ", per channel"."""
    if weights.get("group_size"):
        return f", group {weights['group_size']}"
    strategy = str(weights.get("strategy") or "")
    block = weights.get("block_structure")
    if strategy == "block" and block:
        return f", {block[0]}x{block[1]} blocks"
    return f", per {strategy}" if strategy in {"channel", "tensor"} else ""


def _modelopt(quant_config: dict[str, Any]) -> ExistingQuantization:
    # vLLM 0.32's ModelOpt algos (modelopt.py::LINEAR_ALGOS, resolve): FP8, FP8_PER_CHANNEL_PER_TOKEN and
    # FP8_PB_WO (despite its name) quantize activations too, all ModelOptFp8Config (from 8.0, not
    # compressed-tensors' 7.5: vllm_facts.MODELOPT_FP8); W4A16_NVFP4 is NVFP4 weight-only (Marlin); MXFP8 is
    # ModelOptMxFp8Config (e4m3 weights, an e8m0 scale per 32); MIXED_PRECISION (ModelOptMixedPrecisionConfig)
    # gives each layer in ``quantized_layers`` its own algo.
    config = read_modelopt(quant_config)
    algo = config.algo
    if algo == "W4A16_NVFP4":
        return ExistingQuantization("modelopt", "NVFP4 weight-only (W4A16_NVFP4)", "nvfp4a16")
    if algo in MODELOPT_FP8_ALGOS:
        return ExistingQuantization("modelopt", algo, "modelopt-fp8")
    if algo == "MXFP8":
        return ExistingQuantization(
            "modelopt", "MXFP8 (E8M0 scale per 32)", "modelopt-mxfp8", load_error=load_error(quant_config)
        )
    if algo == "MIXED_PRECISION":
        algos = mixed_algos(config)
        return ExistingQuantization(
            "modelopt",
            f"MIXED_PRECISION ({' + '.join(algos) or 'no quantized layers'})",
            "modelopt-mixed",
            load_error=load_error(quant_config),
        )
    return ExistingQuantization("modelopt", algo or "ModelOpt", "nvfp4" if "FP4" in algo else "fp8")


# A routed expert's projection weight, as llm-compressor saves MoE experts (linearized, one per expert).
EXPERT_WEIGHT = re.compile(r"(?P<experts>.+\.experts)\.\d+\.(?P<proj>[^.]+)\.weight")


def _vllm_match(value: str, pattern: str, check_contains: bool = False) -> bool:
    # vLLM 0.32 quantization/utils/config_utils.py::is_equal_or_regex_match: "re:" is re.match, else equality
    # (or, with check_contains, the pattern inside the value, case-insensitively).
    if pattern.startswith("re:"):
        return re.match(pattern[3:], value) is not None
    return pattern == value or (check_contains and pattern.lower() in value.lower())


def quantizes_experts(quant_config: dict[str, Any], headers: list[TensorHeader]) -> bool | None:
    """Whether vLLM 0.32 finds a compressed-tensors scheme for the checkpoint's routed experts.

    compressed_tensors_moe.py::get_moe_method asks get_scheme_dict for ``<experts>.0.<proj>``: None
    (unquantized experts) when ``ignore`` matches it (utils.py::should_ignore_layer), else the scheme of the
    first target matching the name, or the module's class name RoutedExperts (utils.py::find_matched_target,
    by regex or as a substring), a "Linear" target standing for RoutedExperts too
    (compressed_tensors.py::_add_fused_moe_to_target_scheme_map). from_config drops groups that target
    only an ``*Attention`` module. None when the headers list no expert weights.
    """
    names = sorted(
        {f"{m['experts']}.0.{m['proj']}" for h in headers if (m := EXPERT_WEIGHT.fullmatch(h.name))}
    )
    if not names:
        return None
    targets = [
        target
        for group in (quant_config.get("config_groups") or {}).values()
        if not (len(group.get("targets") or []) == 1 and str(group["targets"][0]).endswith("Attention"))
        for target in group.get("targets") or []
    ]
    if "Linear" in targets:
        targets.append("RoutedExperts")
    ignore = quant_config.get("ignore") or []
    return any(
        not any(_vllm_match(name, pattern) for pattern in ignore)
        and any(_vllm_match(name, t) or _vllm_match("RoutedExperts", t, check_contains=True) for t in targets)
        for name in names
    )


def _modelopt_file(path: Path) -> ExistingQuantization:
    # ModelOpt 0.29 and older keep the config in hf_quant_config.json, which vLLM 0.32 takes as the
    # quantization_config (transformers_utils/config.py::get_config); its algo is under "quantization".
    quant_config = read_hf_quant_config(path)
    if quant_config is None:
        return ExistingQuantization("modelopt", "ModelOpt (hf_quant_config.json)", None)
    return _modelopt(quant_config)


def _compressed_tensors_scheme(quant_config: dict[str, Any]) -> tuple[str, str | None]:
    for group in (quant_config.get("config_groups") or {}).values():
        weights = group.get("weights") or {}
        kind = str(weights.get("type", "int"))
        bits = int(weights.get("num_bits", 8))
        fp4_group = weights.get("group_size") if (kind, bits) == ("float", 4) else None
        key = (kind, bits, bool(group.get("input_activations")), fp4_group)
        scheme, method = COMPRESSED_TENSORS_METHODS.get(key, (f"{kind}{bits}", None))
        return scheme + _granularity(weights), method
    return str(quant_config.get("format", "unknown scheme")), None


def detect_quantization(
    config: dict[str, Any], folder: Path, headers: list[TensorHeader], gguf: GgufCheckpoint | None = None
) -> ExistingQuantization | None:
    """Recognises a checkpoint that is already quantized, from its config, files or tensor dtypes.

    ``gguf`` is the folder's GGUF model when it has no safetensors weights (``read_gguf``).
    """
    # The file is what vLLM serves, whatever a base model's config.json beside it says.
    if gguf is not None:
        # vLLM's GGUF loader takes one file (its docs: "only supports loading single-file GGUF models").
        split = len(gguf.files) > 1
        return ExistingQuantization(
            "gguf",
            f"GGUF {gguf.file_type}".rstrip(),
            "gguf",
            load_error=f"vLLM loads a GGUF model from one file and this one is split in {len(gguf.files)}"
            if split
            else None,
            load_fix=f"merge them first (llama.cpp: llama-gguf-split --merge {gguf.files[0].name} merged.gguf)"
            if split
            else None,
        )
    quant_config = (
        text_config(config).get("quantization_config")
        or config.get("quantization_config")
        or config.get("compression_config")
    )
    if isinstance(quant_config, dict):
        method = str(quant_config.get("quant_method", "compressed-tensors")).lower()
        if method == "compressed-tensors" or "config_groups" in quant_config:
            scheme, recommend_as = _compressed_tensors_scheme(quant_config)
            experts = quantizes_experts(quant_config, headers)
            return ExistingQuantization("compressed-tensors", scheme, recommend_as, experts)
        bits = quant_config.get("bits") or quant_config.get("w_bit")
        group = quant_config.get("group_size") or quant_config.get("q_group_size")
        if method in {"gptq", "awq"}:
            detail = f"{bits}-bit" + (f", group {group}" if group else "")
            return ExistingQuantization(method, detail, "w4a16" if bits == 4 else "w8a16")
        if method == "bitsandbytes":
            four_bit = quant_config.get("load_in_4bit") or quant_config.get("_load_in_4bit")
            return ExistingQuantization(
                method, "4-bit" if four_bit else "8-bit", "bnb-4bit" if four_bit else "bnb-8bit"
            )
        if method in {"fp8", "fbgemm_fp8"}:
            # Fp8Config takes only "static" or "dynamic" activations: always W8A8 (Marlin weight-only below 8.9).
            block = quant_config.get("weight_block_size")
            detail = f", {block[0]}x{block[1]} blocks" if block else ""
            return ExistingQuantization(method, f"FP8 W8A8{detail}", "fp8")
        if method in {"modelopt", "modelopt_fp4"}:
            return _modelopt(quant_config)
        if method == "mxfp4":
            return ExistingQuantization(method, "MXFP4", "mxfp4")
        return ExistingQuantization(method, method, None)
    if (folder / "hf_quant_config.json").is_file():
        return _modelopt_file(folder / "hf_quant_config.json")
    low_precision = Counter(h.dtype for h in headers if h.dtype in {"F8_E4M3", "F8_E5M2", "I8", "U8", "I32"})
    if low_precision:
        dtype = low_precision.most_common(1)[0][0]
        return ExistingQuantization("unknown", f"{dtype} tensors without a quantization_config", None)
    return None
