"""How a checkpoint stores its Linear weights: one WeightLayout, or a mixed-precision one's layout per module."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from engine.model.linear_shape import DECODER_LINEAR_PARTS, LinearShape, Part


@dataclass(frozen=True, slots=True)
class WeightLayout:
    """How a checkpoint stores its Linear weights.

    Attributes:
        name: a short label, e.g. "MXFP4 experts", "FP8 block 128×128", "GPTQ 4-bit g128".
        parts: which parts of the model are quantized (the rest stays at ``unquantized_bytes``).
        bits: bits per quantized weight.
        group_size: weights along the input sharing one scale (None: per output row or block).
        block: (rows, columns) of one scale's block, for block-wise FP8.
        per_tensor_scale: one scale for the whole matrix.
        scale_bytes: bytes of one scale.
        zero_point_bits: bits of a zero point per scale (asymmetric formats).
        act_order_index: whether a ``g_idx`` (int32 per input feature) is stored.
        extra_bytes_per_matrix: global scales, input scales, shape records.
        unquantized_bytes: bytes per parameter of everything that is not quantized.
        per_module: ModelOpt MIXED_PRECISION: each checkpoint module's own layout (``parts`` stays empty).
        vision_modules: prefixes of the vision shapes (``vision.``, ``multi_modal_projector.``) it quantizes; with
            ``per_module``, those vLLM builds with the quantization config, quantized where named (None: any).
    """

    name: str
    parts: tuple[Part, ...] = ()
    bits: float = 16
    group_size: int | None = None
    block: tuple[int, int] | None = None
    per_tensor_scale: bool = False
    scale_bytes: float = 0
    zero_point_bits: float = 0
    act_order_index: bool = False
    extra_bytes_per_matrix: int = 0
    unquantized_bytes: float = 2
    per_module: tuple[ModuleLayout, ...] = ()
    vision_modules: tuple[str, ...] | None = ()

    def quantizes_vision(self, shape: LinearShape) -> bool:
        """Whether this one-algo layout quantizes a vision ``shape`` (never the patch embedding, a convolution)."""
        prefixes = self.vision_modules or ()
        return (
            shape.part == "vision"
            and shape.module != "vision.patch_embedding"
            and shape.module.startswith(prefixes)
        )


@dataclass(frozen=True, slots=True)
class ModuleLayout:
    """How many of one decoder module's matrices a mixed-precision checkpoint stores in one layout.

    Attributes:
        module: the checkpoint's name without layer and expert numbers, e.g. ``mlp.experts.gate_proj``.
        layout: how those matrices are stored.
        matrices: how many names there are (over all layers and experts).
        one_per_name: each name is one matrix (False: a fused-experts name stands for all of a layer's experts).
        layers: the decoder layer of each of those names that is in one (``layer_layout`` picks a layer's).
    """

    module: str
    layout: WeightLayout
    matrices: int
    one_per_name: bool = True
    layers: tuple[int, ...] = ()


def layer_layout(layout: WeightLayout, layer: int) -> WeightLayout:
    """``layout`` for one decoder layer: a mixed-precision checkpoint's modules as that layer's names list them.

    A module the layer does not list stays, with no matrices: vLLM leaves that layer's matrix unquantized
    (ModelOptMixedPrecisionConfig.get_quant_method), where a missing module would take its part's algos.
    """
    modules = tuple(
        replace(module, matrices=module.layers.count(layer), layers=(layer,) * module.layers.count(layer))
        for module in layout.per_module
    )
    return replace(layout, per_module=modules) if layout.per_module else layout


def matrix_bytes(shape: LinearShape, layout: WeightLayout) -> tuple[int, int]:
    """(values, scales) bytes of one matrix of ``shape`` quantized as ``layout``."""
    rows, cols = shape.out_features, shape.in_features
    values = math.ceil(rows * cols * layout.bits / 8)
    if layout.block is not None:
        scales = math.ceil(rows / layout.block[0]) * math.ceil(cols / layout.block[1])
    elif layout.per_tensor_scale:
        scales = 1
    elif layout.group_size:
        scales = rows * math.ceil(cols / layout.group_size)
    else:
        scales = rows
    scale_bytes = math.ceil(scales * (layout.scale_bytes + layout.zero_point_bits / 8))
    scale_bytes += layout.extra_bytes_per_matrix + (4 * cols if layout.act_order_index else 0)
    return values, scale_bytes


# One layer's checkpoint names of each part's matrices, unfused, as a ``re:`` skip pattern is matched against them
# (compressed-tensors' should_ignore_layer checks each shard of a fused gate_up_proj or qkv_proj).
_PART_NAMES: dict[Part, tuple[str, ...]] = {
    "attention": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
    "mlp": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
    "experts": ("mlp.experts.0.gate_proj", "mlp.experts.0.up_proj", "mlp.experts.0.down_proj"),
    "shared_expert": (
        "mlp.shared_experts.gate_proj",
        "mlp.shared_experts.up_proj",
        "mlp.shared_experts.down_proj",
    ),
}


def _regex_skips(regex: str, part: Part) -> bool:
    """Whether ``regex`` (re.match, as vLLM applies it) names every matrix of ``part`` in every layer (a first and
    a far one stand for them), bare or in a multimodal model's language_model."""
    return all(
        any(re.match(regex, f"{root}model.layers.{layer}.{name}") for root in ("", "language_model."))
        for name in _PART_NAMES[part]
        for layer in (0, 999)
    )


def _ignored_parts(patterns: list[str]) -> set[Part]:
    ignored: set[Part] = set()
    for pattern in patterns:
        if pattern.startswith("re:"):
            ignored.update(part for part in _PART_NAMES if _regex_skips(pattern[3:], part))
        if "self_attn" in pattern or pattern.endswith("attn"):
            ignored.add("attention")
        if "shared_expert" in pattern:
            ignored.add("shared_expert")
        elif "experts" in pattern:
            ignored.add("experts")
    return ignored


def quantized_parts(patterns: list[str] | None) -> tuple[Part, ...]:
    """The decoder's Linear parts a format quantizes, less those its skip list (ignore, modules_to_not_convert) names."""
    ignored = _ignored_parts(patterns or [])
    return tuple(part for part in DECODER_LINEAR_PARTS if part not in ignored)
