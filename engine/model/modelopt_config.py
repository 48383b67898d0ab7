"""NVIDIA ModelOpt's quantization config as vLLM 0.32 reads it: the algo, excluded modules, per-layer algos."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

# The quant_algos ModelOptFp8Config owns (vLLM 0.32 modelopt.py::LINEAR_ALGOS, owner "modelopt").
MODELOPT_FP8_ALGOS = frozenset({"FP8", "FP8_PER_CHANNEL_PER_TOKEN", "FP8_PB_WO"})
# modelopt.py::LINEAR_ALGOS: every algo a layer can carry (MIXED_PRECISION picks one per layer).
MODELOPT_LINEAR_ALGOS = MODELOPT_FP8_ALGOS | {"NVFP4", "W4A16_NVFP4", "MXFP8"}

# A decoder layer's module, as checkpoint names spell it: "model.layers.3.mlp.experts.7.gate_proj".
_NVFP4 = frozenset({"NVFP4", "W4A16_NVFP4"})
_DECODER_MODULE = re.compile(r"(?:^|.*\.)layers\.(?P<layer>\d+)\.(?P<module>.+)")
_EXPERT_INDEX = re.compile(r"\.experts\.\d+\.")
# Names of a vision tower's or projector's modules (LLaVA's vision_tower / multi_modal_projector, Qwen-VL's visual).
_VISION_NAMES = ("vision", "visual", "multi_modal_projector", "mm_projector")


@dataclass(frozen=True, slots=True)
class ModelOptConfig:
    """A ModelOpt checkpoint's quantization, as ModelOptQuantConfigBase.from_config reads it.

    Attributes:
        algo: ``quant_algo`` upper-cased ("FP8", "NVFP4", "MXFP8", "MIXED_PRECISION", ...; "" when missing).
        exclude_modules: ``exclude_modules`` (the hf_quant_config.json form) or ``ignore`` (config.json's, or its
            ``exclude_modules`` when it has no ``ignore``).
        group_size: the NVFP4 group size, when given (MIXED_PRECISION: else its first NVFP4 layer's).
        quantized_layers: MIXED_PRECISION's (checkpoint module name, its own upper-cased algo) pairs.
    """

    algo: str
    exclude_modules: tuple[str, ...] = ()
    group_size: int | None = None
    quantized_layers: tuple[tuple[str, str], ...] = ()


def read_modelopt(quant_config: dict[str, Any]) -> ModelOptConfig:
    """Reads either form vLLM 0.32 takes: ``{"quantization": {"quant_algo": ...}}`` or a flat config.json one.

    modelopt.py::ModelOptQuantConfigBase.from_config: the nested (hf_quant_config.json) form keeps its list in
    ``exclude_modules``, the flat (config.json ``quantization_config``) form in ``ignore``, else (vLLM 0.33) in
    ``exclude_modules``;
    ModelOptMixedPrecisionConfig._from_config reads ``quantized_layers`` beside ``quant_algo`` in either.
    """
    nested = quant_config.get("quantization")
    section = nested if isinstance(nested, dict) else quant_config
    excluded = (
        nested.get("exclude_modules")
        if isinstance(nested, dict)
        # vLLM 0.33 takes a flat config's exclude_modules when it has no ignore (ModelOpt writes either key);
        # 0.32 reads ignore alone, but the exporter left those modules 16-bit in the files all the same.
        else section.get("ignore", section.get("exclude_modules"))
    ) or []
    layers = section.get("quantized_layers") or {}
    group = section.get("group_size")
    if group is None and isinstance(layers, dict):
        # ModelOptMixedPrecisionConfig._from_config: else the first NVFP4 layer's (16 when it has none).
        nvfp4 = (
            v for v in layers.values() if isinstance(v, dict) and str(v.get("quant_algo")).upper() in _NVFP4
        )
        group = next((v.get("group_size", 16) for v in nvfp4), None)
    return ModelOptConfig(
        str(section.get("quant_algo") or "").upper(),
        tuple(str(name) for name in excluded) if isinstance(excluded, list) else (),
        int(group) if isinstance(group, int | str) and str(group).isdigit() else None,
        tuple(
            (str(name), str(info.get("quant_algo") or "").upper())
            for name, info in (layers.items() if isinstance(layers, dict) else ())
            if isinstance(info, dict)
        ),
    )


def load_error(quant_config: dict[str, Any]) -> str | None:
    """Why vLLM 0.32 refuses this ModelOpt config on every device, or None when it loads it.

    modelopt.py::ModelOptMxFp8Config._from_config: an hf_quant_config.json-form MXFP8 config must name
    ``kv_cache_quant_algo`` and ``exclude_modules`` (null and [] will do); ModelOptMixedPrecisionConfig._from_config:
    MIXED_PRECISION needs a non-empty ``quantized_layers`` mapping.
    """
    nested = quant_config.get("quantization")
    section = nested if isinstance(nested, dict) else quant_config
    algo = str(section.get("quant_algo") or "").upper()
    if algo == "MXFP8" and isinstance(nested, dict):
        missing = [key for key in ("kv_cache_quant_algo", "exclude_modules") if key not in nested]
        if missing:
            return f"vLLM 0.32 refuses an MXFP8 hf_quant_config.json without {' and '.join(missing)}"
    if algo == "MIXED_PRECISION" and not section.get("quantized_layers"):
        return "vLLM 0.32 refuses a MIXED_PRECISION config without a non-empty quantized_layers mapping"
    return None


def read_hf_quant_config(path: Path) -> dict[str, Any] | None:
    """hf_quant_config.json (ModelOpt 0.29 and older), which vLLM 0.32 takes as the quantization_config.

    Returns:
        The file's object with ``quant_method`` "modelopt" (transformers_utils/config.py::get_config), or None
        when it is unreadable or has no ``quantization`` section with a ``quant_algo``.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    section = data.get("quantization") if isinstance(data, dict) else None
    if not isinstance(section, dict) or not section.get("quant_algo"):
        return None
    return {**data, "quant_method": "modelopt"}


def is_excluded(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether vLLM's ModelOptQuantConfigBase.is_layer_excluded leaves ``name`` unquantized.

    An exact name, a pattern contained in the name (kept for ModelOpt < 0.39), or an fnmatch wildcard.
    """
    return any(pattern == name or pattern in name or fnmatch(name, pattern) for pattern in patterns)


def is_vision_name(name: str) -> bool:
    """Whether a checkpoint module name is in a vision tower or its projector, not the decoder."""
    return any(part in name for part in _VISION_NAMES)


def decoder_module(name: str) -> str:
    """A checkpoint module name without its layer and expert numbers: ``mlp.experts.gate_proj``, ``lm_head``."""
    if name == "lm_head" or name.endswith(".lm_head"):
        return "lm_head"
    # Only the decoder's layers lose their numbers; a vision tower's names stay whole (checkpoint_size sizes them).
    match = None if is_vision_name(name) else _DECODER_MODULE.fullmatch(name)
    return _EXPERT_INDEX.sub(".experts.", "." + match["module"] + ".")[1:-1] if match else name


def decoder_layer(name: str) -> int | None:
    """The decoder layer a checkpoint module name is in (``model.layers.3.mlp.down_proj``: 3); None outside them."""
    match = None if is_vision_name(name) else _DECODER_MODULE.fullmatch(name)
    return int(match["layer"]) if match else None


def names_one_matrix(name: str) -> bool:
    """Whether a quantized_layers name is one matrix; an experts name without an expert number is all of them."""
    return "experts" not in name.split(".") or _EXPERT_INDEX.search(name + ".") is not None


def mixed_algos(config: ModelOptConfig) -> tuple[str, ...]:
    """The algos a MIXED_PRECISION config's layers (those not excluded) carry, sorted."""
    return tuple(
        sorted(
            {algo for name, algo in config.quantized_layers if not is_excluded(name, config.exclude_modules)}
        )
    )
