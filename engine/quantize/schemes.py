"""The data-free schemes: what each one stores per Linear layer in compressed-tensors' layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.plan.methods import method as registered_method

FP8_MAX = 448.0
FP4_MAX = 6.0


@dataclass(frozen=True)
class Scheme:
    """How one data-free method stores a Linear layer's weight.

    Attributes:
        method: the quant-tui method name; its preset, description and whether it quantizes
            activations are the method registry's (``engine.plan.methods``).
        format: the compressed-tensors format written in quantization_config.
        kind: "float" (FP8 E4M3), "int", or "fp4" (NVFP4's E2M1 with FP8 group scales and a global scale).
        num_bits: bits per quantized weight.
        group_size: weights sharing one scale along the input dimension; None is one per row (or block).
        half_range: the divisor turning an absolute maximum into a scale, ``(q_max - q_min) / 2``
            exactly as compressed-tensors computes it (448, 127.5, 7.5, 6).
        block: ``(rows, columns)`` of the weight blocks sharing one scale (FP8 block), else None.
        activation_group_size: dynamic activation scales per this many inputs (per-token-group), else per token.
    """

    method: str
    format: str
    kind: Literal["float", "int", "fp4"]
    num_bits: int
    group_size: int | None
    half_range: float
    block: tuple[int, int] | None = None
    activation_group_size: int | None = None

    @property
    def preset(self) -> str:
        """The compressed-tensors preset scheme the method corresponds to (``FP8_DYNAMIC``, ``W4A16``, ...)."""
        preset = registered_method(self.method).ct_scheme
        assert preset is not None, f"{self.method} has no compressed-tensors preset"
        return preset

    @property
    def description(self) -> str:
        """What the checkpoint holds, one sentence (the quant-tui card's)."""
        return registered_method(self.method).description

    @property
    def quantizes_activations(self) -> bool:
        """Whether activations are quantized on the fly (dynamic, per token or per token group)."""
        return registered_method(self.method).weights.quantizes_activations

    @property
    def q_min(self) -> float:
        """The lowest quantized value."""
        return -self.q_max if self.kind != "int" else -float(2 ** (self.num_bits - 1))

    @property
    def q_max(self) -> float:
        """The highest quantized value."""
        if self.kind == "float":
            return FP8_MAX
        if self.kind == "fp4":
            return FP4_MAX
        return float(2 ** (self.num_bits - 1) - 1)

    @property
    def packed(self) -> bool:
        """Whether quantized values are packed into words (``weight_packed``)."""
        return self.format in ("pack-quantized", "nvfp4-pack-quantized")

    @property
    def pack_factor(self) -> int:
        """Quantized values per stored element: per int32 for INT packing, per byte for NVFP4, else 1."""
        if self.kind == "fp4":
            return 8 // self.num_bits
        return 32 // self.num_bits if self.packed else 1

    @property
    def global_scale(self) -> bool:
        """Whether the weight carries one FP32 ``weight_global_scale`` (NVFP4)."""
        return self.kind == "fp4"

    @property
    def scale_row_divisor(self) -> int:
        """Weight rows per scale row (the block height for block scales, else 1)."""
        return self.block[0] if self.block else 1

    def output_tensors(
        self, name: str, shape: tuple[int, ...], dtype: str
    ) -> list[tuple[str, str, tuple[int, ...]]]:
        """The tensors (name, safetensors dtype, shape) that replace the weight ``name`` of this shape.

        The first is the quantized weight and the second its scale; packed INT formats add the
        original shape, NVFP4 adds the global scale.

        Args:
            name: the weight's name, ending in ``.weight``.
            shape: its ``[out_features, in_features]``.
            dtype: its safetensors dtype (BF16, F16 or F32); scales are stored in it (FP8 for NVFP4).
        """
        module = name.removesuffix(".weight")
        rows, cols = shape
        if self.kind == "fp4":
            assert self.group_size is not None
            return [
                (f"{module}.weight_packed", "U8", (rows, cols // self.pack_factor)),
                (f"{module}.weight_scale", "F8_E4M3", (rows, cols // self.group_size)),
                (f"{module}.weight_global_scale", "F32", (1,)),
            ]
        if self.packed:
            assert self.group_size is not None
            return [
                (f"{module}.weight_packed", "I32", (rows, -(-cols // self.pack_factor))),
                (f"{module}.weight_scale", dtype, (rows, cols // self.group_size)),
                (f"{module}.weight_shape", "I64", (2,)),
            ]
        weight_dtype = "F8_E4M3" if self.kind == "float" else "I8"
        if self.block is not None:
            scale_shape = (-(-rows // self.block[0]), -(-cols // self.block[1]))
        else:
            scale_shape = (rows, 1)
        return [
            (f"{module}.weight", weight_dtype, (rows, cols)),
            (f"{module}.weight_scale", dtype, scale_shape),
        ]


def _weight_only_int(bits: int) -> Scheme:
    """W4A16 / W8A16: symmetric INT weights, one scale per 128 inputs, packed into int32 words (Marlin's layout)."""
    return Scheme(
        method=f"w{bits}a16",
        format="pack-quantized",
        kind="int",
        num_bits=bits,
        group_size=128,
        half_range=(2**bits - 1) / 2,
    )


SCHEMES: dict[str, Scheme] = {
    "fp8": Scheme(
        method="fp8",
        format="float-quantized",
        kind="float",
        num_bits=8,
        group_size=None,
        half_range=448.0,
    ),
    "fp8-block": Scheme(
        method="fp8-block",
        format="float-quantized",
        kind="float",
        num_bits=8,
        group_size=None,
        half_range=448.0,
        block=(128, 128),
        activation_group_size=128,
    ),
    "int8-w8a8": Scheme(
        method="int8-w8a8",
        format="int-quantized",
        kind="int",
        num_bits=8,
        group_size=None,
        half_range=127.5,
    ),
    "w8a16": _weight_only_int(8),
    "w4a16": _weight_only_int(4),
    "nvfp4a16": Scheme(
        method="nvfp4a16",
        format="nvfp4-pack-quantized",
        kind="fp4",
        num_bits=4,
        group_size=16,
        half_range=6.0,
    ),
}

FLOAT_DTYPES = ("BF16", "F16", "F32")
