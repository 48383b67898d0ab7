"""A ModelOpt checkpoint's weight layout from its config: one algo's tensors per matrix, or each module's own algo."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

from engine.model.linear_shape import Part
from engine.model.modelopt_config import (
    MODELOPT_LINEAR_ALGOS,
    decoder_layer,
    decoder_module,
    is_excluded,
    names_one_matrix,
    read_modelopt,
)
from engine.model.storage_layout import ModuleLayout, WeightLayout, quantized_parts
from engine.model.vision_params import quantizable_vision


def modelopt_algo_layout(
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


def modelopt_layout(quant: dict[str, Any], dtype_bytes: float, model: dict[str, Any]) -> WeightLayout:
    """The layout of a ModelOpt config ``quant`` (either form) of the model whose config.json is ``model``."""
    config = read_modelopt(quant)
    if config.algo != "MIXED_PRECISION":
        algo = "NVFP4" if "FP4" in config.algo and config.algo != "W4A16_NVFP4" else config.algo
        layout = modelopt_algo_layout(
            algo, config.group_size, quantized_parts(list(config.exclude_modules)), dtype_bytes
        )
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
            modelopt_algo_layout(algo, config.group_size, (), dtype_bytes),
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
