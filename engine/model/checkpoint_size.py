"""Bytes of a checkpoint's weights from config.json alone, for 16-bit and pre-quantized formats.

Formats: MXFP4 (gpt-oss: only the experts are 4-bit), FP8 with block scales (DeepSeek-V3,
Qwen3-FP8), GPTQ and AWQ (bits, group size, act-order ``g_idx``), compressed-tensors (its config
groups), ModelOpt FP8/NVFP4 and bitsandbytes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.model.config_json import first_key, text_config
from engine.model.mixed_precision_size import mixed_shape_bytes, mixed_vision_bytes
from engine.model.modelopt_config import (
    read_hf_quant_config,
)
from engine.model.modelopt_layout import modelopt_layout
from engine.model.param_count import ModelShapes
from engine.model.safetensors_headers import TORCH_DTYPE_BYTES
from engine.model.storage_layout import (
    WeightLayout,
    layer_layout,
    matrix_bytes,
    quantized_parts,
)
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
            quantized_parts(quant.get("ignore")),
            4,
            16,
            scale_bytes=1,
            extra_bytes_per_matrix=8,
            vision_modules=vision,
        )
    if "mxfp4" in fmt:
        return WeightLayout(
            "MXFP4 (compressed-tensors)",
            quantized_parts(quant.get("ignore")),
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
        quantized_parts(quant.get("ignore")),
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


def _bitsandbytes(quant: dict[str, Any], dtype_bytes: float) -> WeightLayout:
    parts = quantized_parts(quant.get("llm_int8_skip_modules"))
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
        parts = quantized_parts(quant.get("modules_to_not_convert"))
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
        parts = quantized_parts(quant.get("modules_to_not_convert"))
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
        return modelopt_layout(quant, dtype_bytes, config)
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
