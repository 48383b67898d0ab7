"""Bytes of a checkpoint's weights from config.json alone, for 16-bit and pre-quantized formats.

Formats: MXFP4 (gpt-oss: only the experts are 4-bit), FP8 with block scales (DeepSeek-V3,
Qwen3-FP8), GPTQ and AWQ (bits, group size, act-order ``g_idx``), compressed-tensors (its config
groups), ModelOpt FP8/NVFP4 and bitsandbytes.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.model.config_json import first_key, text_config
from engine.model.linear_shape import DECODER_LINEAR_PARTS, Part
from engine.model.mixed_precision_size import mixed_shape_bytes, mixed_vision_bytes
from engine.model.modelopt_config import (
    MODELOPT_LINEAR_ALGOS,
    decoder_layer,
    decoder_module,
    is_excluded,
    names_one_matrix,
    read_hf_quant_config,
    read_modelopt,
)
from engine.model.param_count import ModelShapes
from engine.model.safetensors_headers import TORCH_DTYPE_BYTES
from engine.model.storage_layout import ModuleLayout, WeightLayout, layer_layout, matrix_bytes
from engine.model.vision_params import quantizable_vision


@dataclass(frozen=True, slots=True)
class WeightBytes:
    """Weight bytes (on disk or once loaded) split into the quantized values, their scales (and zero points), and the rest.

    Attributes:
        layers: each decoder layer's bytes of these weights, which pipeline stages sum (empty: not
            known, and the layers are taken as equal).
        vocab_bits: (embed_tokens, lm_head) bits per weight when they are stored quantized (GGUF) and
            counted in ``quantized``; None: they are at the serving dtype, in ``unquantized``.
    """

    quantized: int
    scales: int
    unquantized: int
    layers: tuple[int, ...] = ()
    vocab_bits: tuple[float, float] | None = None

    @property
    def total(self) -> int:
        """All weight bytes."""
        return self.quantized + self.scales + self.unquantized


def _ignored_parts(patterns: list[str]) -> set[Part]:
    ignored: set[Part] = set()
    for pattern in patterns:
        if "self_attn" in pattern or pattern.endswith("attn"):
            ignored.add("attention")
        if "shared_expert" in pattern:
            ignored.add("shared_expert")
        elif "experts" in pattern:
            ignored.add("experts")
    return ignored


def _parts(patterns: list[str] | None) -> tuple[Part, ...]:
    ignored = _ignored_parts(patterns or [])
    return tuple(part for part in DECODER_LINEAR_PARTS if part not in ignored)


def _ignores(prefix: str, patterns: list[str]) -> bool:
    """Whether an ignore list leaves the vision module vLLM builds as ``prefix`` unquantized.

    compressed-tensors' should_ignore_layer and Fp8Config's is_layer_skipped (exact mode) match each layer's full
    name: a ``re:`` regex by re.match, anything else exactly, after the model's hf_to_vllm_mapper (so a name is
    taken in either form). A regex is tried on the module's own name and a listed layer inside the module stands
    for all of it: a checkpoint ignores a tower whole or not at all.
    """
    for name in (prefix, f"model.{prefix}"):
        for pattern in patterns:
            if pattern.startswith("re:"):
                if re.match(pattern[3:], name):
                    return True
            elif pattern == name or pattern.startswith(f"{name}."):
                return True
    return False


def _built_vision(
    config: dict[str, Any], method: str, ignore: list[str], targets: list[str] | None = None
) -> tuple[str, ...]:
    """The vision shapes vLLM builds with the quantization config ``method`` that ``ignore`` leaves quantized.

    ``targets`` (compressed-tensors' config_groups): find_matched_target needs one, either a ``re:`` regex on the
    name or a class name the layer's contains ("Linear" is in every vLLM Linear's); None: every layer is reached.
    """

    def reached(prefix: str) -> bool:
        if targets is None:
            return True
        names = (prefix, f"model.{prefix}")
        return any(
            target.lower() == "linear"
            or (target.startswith("re:") and any(re.match(target[3:], name) for name in names))
            for target in targets
        )

    model_type = str(config.get("model_type") or "")
    return tuple(
        shapes
        for shapes, prefix in quantizable_vision(model_type, config, method) or ()
        if reached(prefix) and not _ignores(prefix, ignore)
    )


def _compressed_tensors(
    quant: dict[str, Any], dtype_bytes: float, config: dict[str, Any] | None = None
) -> WeightLayout:
    groups = list((quant.get("config_groups") or {}).values())
    group = groups[0] if groups else {}
    targets = [str(target) for g in groups for target in g.get("targets") or []]
    vision = _built_vision(config or {}, "compressed-tensors", list(quant.get("ignore") or []), targets)
    weights = group.get("weights") or {}
    bits = int(weights.get("num_bits", 8))
    kind = str(weights.get("type", "int"))
    strategy = str(weights.get("strategy", "channel"))
    fmt = str(group.get("format") or quant.get("format") or "")
    inputs = group.get("input_activations") or {}
    extra = 0
    if inputs and not inputs.get("dynamic", True) and "fp4" not in fmt:
        extra += int(dtype_bytes)  # a static input scale per matrix
    scale_bytes = dtype_bytes
    if "nvfp4" in fmt or (kind == "float" and bits == 4 and weights.get("group_size") == 16):
        return WeightLayout(
            "NVFP4 (compressed-tensors)",
            _parts(quant.get("ignore")),
            4,
            16,
            scale_bytes=1,
            extra_bytes_per_matrix=8,
            vision_modules=vision,
        )
    if "mxfp4" in fmt:
        return WeightLayout(
            "MXFP4 (compressed-tensors)",
            _parts(quant.get("ignore")),
            4,
            32,
            scale_bytes=1,
            vision_modules=vision,
        )
    if fmt == "pack-quantized":
        extra += 16  # weight_shape: two int64
    zero_bits = 0 if weights.get("symmetric", True) else bits
    block = (
        tuple(weights["block_structure"]) if strategy == "block" and weights.get("block_structure") else None
    )
    return WeightLayout(
        f"{kind.upper()}{bits} {strategy} (compressed-tensors)",
        _parts(quant.get("ignore")),
        bits,
        int(weights["group_size"]) if strategy == "group" and weights.get("group_size") else None,
        (int(block[0]), int(block[1])) if block else None,
        per_tensor_scale=strategy == "tensor",
        scale_bytes=scale_bytes,
        zero_point_bits=zero_bits,
        extra_bytes_per_matrix=extra,
        unquantized_bytes=dtype_bytes,
        vision_modules=vision,
    )


def _modelopt_algo(
    algo: str, group_size: int | None, parts: tuple[Part, ...], dtype_bytes: float
) -> WeightLayout:
    """One ModelOpt linear algo's tensors per matrix, as vLLM 0.32's modelopt.py create_weights registers them."""
    if algo in {"NVFP4", "W4A16_NVFP4"}:
        # KNvfp4Static: uint8 weight (2 values a byte), an FP8 weight_scale per group (16) along the input and
        # a float32 weight_scale_2; W4A4 adds KNvfp4Dynamic's float32 input_scale.
        return WeightLayout(
            f"{algo} (ModelOpt)",
            parts,
            4,
            group_size or 16,
            scale_bytes=1,
            extra_bytes_per_matrix=8 if algo == "NVFP4" else 4,
            unquantized_bytes=dtype_bytes,
        )
    if algo == "MXFP8":
        # KMxfp8Static: float8_e4m3fn weight, a uint8 (E8M0) weight_scale per 32 along the input; the
        # activations are quantized at run time (KDynamicNoParam: nothing stored).
        return WeightLayout("MXFP8 (ModelOpt)", parts, 8, 32, scale_bytes=1, unquantized_bytes=dtype_bytes)
    if algo == "FP8_PER_CHANNEL_PER_TOKEN":
        # KFp8StaticChannel: a float32 weight_scale per output row; per-token activations, nothing stored.
        return WeightLayout(
            "FP8 per channel (ModelOpt)", parts, 8, scale_bytes=4, unquantized_bytes=dtype_bytes
        )
    if algo == "FP8_PB_WO":
        # KFp8Block128: a float32 weight_scale per 128x128 block (cdiv on the output).
        return WeightLayout(
            "FP8 block 128×128 (ModelOpt)",
            parts,
            8,
            block=(128, 128),
            scale_bytes=4,
            unquantized_bytes=dtype_bytes,
        )
    # KFp8StaticTensor (FP8): a float32 weight_scale and input_scale per matrix.
    return WeightLayout(
        "FP8 (ModelOpt)",
        parts,
        8,
        per_tensor_scale=True,
        scale_bytes=4,
        extra_bytes_per_matrix=4,
        unquantized_bytes=dtype_bytes,
    )


# ModelOptQuantConfigBase.get_quant_method keeps these unquantized whatever exclude_modules says (ModelOpt < 0.39).
_MODELOPT_16_BIT_VISION = ("vision_tower", "vision_model", "vit_large_projector")


def _modelopt_vision(config: dict[str, Any], excluded: tuple[str, ...]) -> tuple[str, ...]:
    """The vision shapes a one-algo ModelOpt config quantizes: built with it, not kept 16-bit, not excluded."""
    model_type = str(config.get("model_type") or "")
    return tuple(
        shapes
        for shapes, prefix in quantizable_vision(model_type, config, "modelopt") or ()
        if not any(kept in prefix for kept in _MODELOPT_16_BIT_VISION)
        and not is_excluded(prefix, excluded)
        and not is_excluded(f"model.{prefix}", excluded)  # the name ModelOpt saw, before vLLM's mapper
    )


def _modelopt(quant: dict[str, Any], dtype_bytes: float, model: dict[str, Any]) -> WeightLayout:
    config = read_modelopt(quant)
    if config.algo != "MIXED_PRECISION":
        algo = "NVFP4" if "FP4" in config.algo and config.algo != "W4A16_NVFP4" else config.algo
        layout = _modelopt_algo(algo, config.group_size, _parts(list(config.exclude_modules)), dtype_bytes)
        return replace(layout, vision_modules=_modelopt_vision(model, config.exclude_modules))
    # ModelOptMixedPrecisionConfig.get_quant_method: an excluded layer, or one missing from quantized_layers,
    # stays unquantized; the others take their own algo.
    names: dict[tuple[str, str, bool], list[int | None]] = defaultdict(list)
    for name, algo in config.quantized_layers:
        if algo in MODELOPT_LINEAR_ALGOS and not is_excluded(name, config.exclude_modules):
            names[(decoder_module(name), algo, names_one_matrix(name))].append(decoder_layer(name))
    modules = tuple(
        ModuleLayout(
            module,
            _modelopt_algo(algo, config.group_size, (), dtype_bytes),
            len(layers),
            one,
            tuple(layer for layer in layers if layer is not None),
        )
        for (module, algo, one), layers in sorted(names.items())
    )
    algos = sorted({algo for _, algo, _ in names})
    vision = quantizable_vision(str(model.get("model_type") or ""), model, "modelopt_mixed")
    return WeightLayout(
        f"MIXED_PRECISION {' + '.join(algos)} (ModelOpt)",
        unquantized_bytes=dtype_bytes,
        per_module=modules,
        vision_modules=None if vision is None else tuple(shapes for shapes, _ in vision),
    )


def _bitsandbytes(quant: dict[str, Any], dtype_bytes: float) -> WeightLayout:
    parts = _parts(quant.get("llm_int8_skip_modules"))
    if not (quant.get("load_in_4bit") or quant.get("_load_in_4bit")):
        return WeightLayout("bitsandbytes INT8", parts, 8, scale_bytes=4, unquantized_bytes=dtype_bytes)
    # bitsandbytes functional.quantize_4bit: one fp32 absmax per 64 weights and, saved with each weight,
    # its 16-entry fp32 NF4 map (quant_map, 64 B). Double quantization (bnb_4bit_use_double_quant,
    # compress_statistics) stores the absmax through quantize_blockwise(blocksize=256): one uint8 each,
    # an fp32 nested_absmax per 256 of them and the 256-entry fp32 nested_quant_map (1 KiB) a weight.
    # Llama-3.1-8B NF4 with it is 5,702,539,264 B (unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit, the Hub
    # lists its model.safetensors at 5.7 GB), where an fp32 absmax counted 6.03 GB, 5.7 % over.
    if quant.get("bnb_4bit_use_double_quant"):
        return WeightLayout(
            "bitsandbytes NF4, double quantization",
            parts,
            4,
            64,
            scale_bytes=1 + 4 / 256,
            extra_bytes_per_matrix=64 + 1024,
            unquantized_bytes=dtype_bytes,
        )
    return WeightLayout(
        "bitsandbytes NF4",
        parts,
        4,
        64,
        scale_bytes=4,
        extra_bytes_per_matrix=64,
        unquantized_bytes=dtype_bytes,
    )


def weight_layout(config: dict[str, Any], folder: Path | None = None) -> WeightLayout:
    """How the checkpoint described by ``config`` (and ``hf_quant_config.json``, if any) stores weights."""
    text = text_config(config)
    dtype = str(
        first_key(text, "torch_dtype", "dtype", default=first_key(config, "torch_dtype", default="bfloat16"))
    )
    dtype_bytes = TORCH_DTYPE_BYTES.get(dtype, 2)
    quant = (
        text.get("quantization_config")
        or config.get("quantization_config")
        or config.get("compression_config")
    )
    if not isinstance(quant, dict) and folder is not None and (folder / "hf_quant_config.json").is_file():
        quant = read_hf_quant_config(folder / "hf_quant_config.json")
    if not isinstance(quant, dict):
        return WeightLayout(f"{dtype} (unquantized)", unquantized_bytes=dtype_bytes)
    method = str(quant.get("quant_method", "compressed-tensors")).lower()
    if method == "mxfp4":  # gpt-oss: experts in MXFP4 (E8M0 scale per 32), the rest 16-bit
        return WeightLayout(
            "MXFP4 experts", ("experts",), 4, 32, scale_bytes=1, unquantized_bytes=dtype_bytes
        )
    if method in {"fp8", "fbgemm_fp8"}:
        block = quant.get("weight_block_size")
        parts = _parts(quant.get("modules_to_not_convert"))
        # Fp8Config.from_config: ignored_layers, else modules_to_not_convert
        skipped = list(quant.get("ignored_layers") or quant.get("modules_to_not_convert") or [])
        vision = _built_vision(config, method, skipped)
        if block:
            rows, cols = int(block[0]), int(block[1])
            return WeightLayout(
                f"FP8 block {rows}×{cols}", parts, 8, block=(rows, cols), scale_bytes=4, vision_modules=vision
            )
        return WeightLayout(
            "FP8 per tensor",
            parts,
            8,
            per_tensor_scale=True,
            scale_bytes=4,
            extra_bytes_per_matrix=4,
            vision_modules=vision,
        )
    if method in {"gptq", "awq"}:
        bits = int(quant.get("bits") or quant.get("w_bit") or 4)
        group = int(quant.get("group_size") or quant.get("q_group_size") or -1)
        parts = _parts(quant.get("modules_to_not_convert"))
        label = f"{method.upper()} {bits}-bit" + (f" g{group}" if group > 0 else "")
        return WeightLayout(
            label,
            parts,
            bits,
            group if group > 0 else None,
            scale_bytes=2,
            zero_point_bits=bits,
            act_order_index=method == "gptq",
            unquantized_bytes=2,  # GPTQ/AWQ checkpoints are float16
        )
    if method == "compressed-tensors" or "config_groups" in quant:
        return _compressed_tensors(quant, dtype_bytes, config)
    if method in {"modelopt", "modelopt_fp4"}:
        return _modelopt(quant, dtype_bytes, config)
    if method == "bitsandbytes":
        return _bitsandbytes(quant, dtype_bytes)
    return WeightLayout(f"{method} (size unknown, counted 16-bit)", unquantized_bytes=dtype_bytes)


def checkpoint_bytes(shapes: ModelShapes, layout: WeightLayout, layer: int | None = None) -> WeightBytes:
    """The loaded weights' bytes (MTP layers excluded) of a model stored as ``layout``.

    ``shapes`` may be one decoder layer's (``decoder_layer_shapes``): ``layer`` then sizes a mixed-precision
    checkpoint's matrices by that layer's own names (``layer_layout``), not all layers' mix.
    """
    if layer is not None:
        layout = layer_layout(layout, layer)
    quantized = scales = unquantized_params = 0
    linears = list(shapes.linears)
    if layout.per_module:
        quantized, scales, unquantized_params = mixed_vision_bytes(
            [shape for shape in linears if shape.part == "vision"], layout.per_module, layout.vision_modules
        )
        linears = [shape for shape in linears if shape.part != "vision"]
    for shape in linears:
        if layout.per_module:
            values, scale, kept = mixed_shape_bytes(shape, layout.per_module)
            quantized += values
            scales += scale
            unquantized_params += kept
        elif shape.part in layout.parts or layout.quantizes_vision(shape):
            values, scale = matrix_bytes(shape, layout)
            quantized += values * shape.count
            scales += scale * shape.count
        else:
            unquantized_params += shape.numel
    unquantized_params += shapes.vector_params + shapes.embedding + shapes.vision_vector_params
    return WeightBytes(quantized, scales, math.ceil(unquantized_params * layout.unquantized_bytes))
