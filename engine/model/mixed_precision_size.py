"""A ModelOpt MIXED_PRECISION checkpoint's matrices sized by the names its quantized_layers gives each algo."""

from __future__ import annotations

from engine.model.linear_shape import LinearShape
from engine.model.modelopt_config import is_vision_name
from engine.model.storage_layout import ModuleLayout, matrix_bytes


def _module_part(module: str) -> str:
    """The part (linear_shape.Part) a checkpoint module name belongs to."""
    if module == "lm_head":
        return "lm_head"
    if is_vision_name(module):  # before "attn": a vision block's self_attn is not the decoder's
        return "vision"
    if "shared_expert" in module:
        return "shared_expert"
    if "experts" in module.split("."):
        return "experts"
    if "linear_attn" in module or "mamba" in module:
        return "linear_attention"
    return "attention" if "attn" in module else "mlp"


def mixed_shape_bytes(shape: LinearShape, modules: tuple[ModuleLayout, ...]) -> tuple[int, int, int]:
    """(values, scales, unquantized parameters) of ``shape`` in a mixed-precision checkpoint.

    The checkpoint names each matrix: one of ``shape``'s (a fused gate_up_proj is its gate_proj and up_proj
    halves) takes its own layout, the rest stay 16-bit. More names than ``shape`` has matrices (its layers
    sized one at a time, or MTP layers listed too) share its matrices in proportion. A part whose names don't
    match the shape's (Mixtral's w1/w2/w3, fused experts) is taken as quantized throughout, in its algos' proportions.
    """
    base, _, projection = shape.module.rpartition(".")
    halves = {f"{base}.gate_proj", f"{base}.up_proj"} if projection == "gate_up_proj" else set()
    exact = [m for m in modules if m.module == shape.module and m.one_per_name]
    split = [m for m in modules if m.module in halves and m.one_per_name]
    pieces, matched = (2, split) if split and not exact else (1, exact)
    if not matched:
        matched = [m for m in modules if _module_part(m.module) == shape.part]
        pieces = 1
        named = sum(m.matrices for m in matched)
        if not named:  # named in other layers only (``layer_layout``): 16-bit here
            return 0, 0, shape.numel
        share = [shape.count * m.matrices / named for m in matched]
    else:
        named = sum(m.matrices for m in matched)
        if not named:  # this layer does not list it: vLLM builds it unquantized
            return 0, 0, shape.numel
        scale = min(1.0, shape.count * pieces / named)
        share = [m.matrices * scale for m in matched]
    piece = LinearShape(shape.module, shape.part, shape.in_features, shape.out_features // pieces, 1)
    return _shared_bytes(shape, piece, matched, share)


def _shared_bytes(
    shape: LinearShape, piece: LinearShape, matched: list[ModuleLayout], share: list[float]
) -> tuple[int, int, int]:
    """(values, scales, unquantized parameters) of ``shape`` when ``share[i]`` of its ``piece``s take ``matched[i]``."""
    values = scales = 0.0
    for entry, count in zip(matched, share, strict=True):
        value, scale_bytes = matrix_bytes(piece, entry.layout)
        values, scales = values + value * count, scales + scale_bytes * count
    kept = shape.numel - round(sum(share) * piece.in_features * piece.out_features)
    return round(values), round(scales), kept


def mixed_vision_bytes(
    shapes: list[LinearShape],
    modules: tuple[ModuleLayout, ...],
    built_quantized: tuple[str, ...] | None = None,
) -> tuple[int, int, int]:
    """(values, scales, unquantized parameters) of the vision tower and projector in a mixed-precision checkpoint.

    ModelOptMixedPrecisionConfig quantizes a vision Linear only when quantized_layers names it
    (_resolve_quant_algo; unlike the one-algo configs it has no vision_tower exception). A projector matrix
    (``multi_modal_projector.linear_1``) takes the names ending in its own; the tower, sized as a generic ViT,
    is quantized in the share its other names are of its matrices, in their algos' proportions. The patch
    embedding is a convolution, never quantized, and so is a shape vLLM builds without the quantization config
    (``built_quantized``: the shape prefixes it builds with it; None: all).
    """
    vision = [m for m in modules if _module_part(m.module) == "vision"]
    if built_quantized is not None:
        unbuilt = [s for s in shapes if not s.module.startswith(built_quantized)]
        shapes = [s for s in shapes if s not in unbuilt]
        if not shapes:
            return 0, 0, sum(s.numel for s in unbuilt)
        values, scales, kept = mixed_vision_bytes(shapes, modules)
        return values, scales, kept + sum(s.numel for s in unbuilt)
    tower = [s for s in shapes if s.module.startswith("vision.") and s.module != "vision.patch_embedding"]
    values = scales = kept = 0
    for shape in shapes:
        if shape in tower or shape.module == "vision.patch_embedding":
            continue
        own = [m for m in vision if m.module == shape.module or m.module.endswith("." + shape.module)]
        vision = [m for m in vision if m not in own]
        scale = min(1.0, shape.count / max(sum(m.matrices for m in own), 1))
        sized = _shared_bytes(shape, shape, own, [m.matrices * scale for m in own])
        values, scales, kept = values + sized[0], scales + sized[1], kept + sized[2]
    listed = sum(m.matrices for m in vision)
    fraction = min(1.0, listed / max(sum(s.count for s in tower), 1))
    for shape in tower:
        sized = _shared_bytes(
            shape, shape, vision, [shape.count * fraction * m.matrices / listed for m in vision]
        )
        values, scales, kept = values + sized[0], scales + sized[1], kept + sized[2]
    kept += sum(s.numel for s in shapes if s.module == "vision.patch_embedding")
    return values, scales, kept
