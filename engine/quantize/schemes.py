"""The data-free schemes: their compressed-tensors layout, and scale/quantize/pack math matching it bit for bit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

INT4_PACK_FACTOR = 8  # 4-bit values per int32


@dataclass(frozen=True)
class Scheme:
    """How one data-free method stores a Linear layer's weight.

    Attributes:
        method: the quant-tui method name.
        preset: the compressed-tensors preset scheme it corresponds to.
        format: the compressed-tensors format written in quantization_config.
        kind: "float" (FP8 E4M3) or "int".
        num_bits: bits per quantized weight.
        group_size: weights sharing one scale along the input dimension; None is one per row.
        quantizes_activations: whether activations are quantized on the fly (dynamic, per token).
        half_range: the divisor turning an absolute maximum into a scale, ``(q_max - q_min) / 2``
            exactly as compressed-tensors computes it (448, 127.5, 7.5).
        description: a short human description.
    """

    method: str
    preset: str
    format: str
    kind: Literal["float", "int"]
    num_bits: int
    group_size: int | None
    quantizes_activations: bool
    half_range: float
    description: str

    @property
    def q_min(self) -> float:
        """The lowest quantized value."""
        return -448.0 if self.kind == "float" else -float(2 ** (self.num_bits - 1))

    @property
    def q_max(self) -> float:
        """The highest quantized value."""
        return 448.0 if self.kind == "float" else float(2 ** (self.num_bits - 1) - 1)

    @property
    def packed(self) -> bool:
        """Whether quantized values are packed eight to an int32 (``weight_packed``)."""
        return self.format == "pack-quantized"

    def output_tensors(
        self, name: str, shape: tuple[int, ...], dtype: str
    ) -> list[tuple[str, str, tuple[int, ...]]]:
        """The tensors (name, safetensors dtype, shape) that replace the weight ``name`` of this shape.

        Args:
            name: the weight's name, ending in ``.weight``.
            shape: its ``[out_features, in_features]``.
            dtype: its safetensors dtype (BF16, F16 or F32); scales are stored in it.
        """
        module = name.removesuffix(".weight")
        rows, cols = shape
        if self.packed:
            assert self.group_size is not None
            return [
                (f"{module}.weight_packed", "I32", (rows, cols // INT4_PACK_FACTOR)),
                (f"{module}.weight_scale", dtype, (rows, cols // self.group_size)),
                (f"{module}.weight_shape", "I64", (2,)),
            ]
        weight_dtype = "F8_E4M3" if self.kind == "float" else "I8"
        return [
            (f"{module}.weight", weight_dtype, (rows, cols)),
            (f"{module}.weight_scale", dtype, (rows, 1)),
        ]


SCHEMES: dict[str, Scheme] = {
    "fp8": Scheme(
        method="fp8",
        preset="FP8_DYNAMIC",
        format="float-quantized",
        kind="float",
        num_bits=8,
        group_size=None,
        quantizes_activations=True,
        half_range=448.0,
        description="FP8 E4M3 weights with one scale per output channel; activations FP8, dynamic per token",
    ),
    "int8-w8a8": Scheme(
        method="int8-w8a8",
        preset="W8A8",
        format="int-quantized",
        kind="int",
        num_bits=8,
        group_size=None,
        quantizes_activations=True,
        half_range=127.5,
        description="INT8 symmetric weights with one scale per output channel; activations INT8, dynamic per token",
    ),
    "w4a16": Scheme(
        method="w4a16",
        preset="W4A16",
        format="pack-quantized",
        kind="int",
        num_bits=4,
        group_size=128,
        quantizes_activations=False,
        half_range=7.5,
        description="INT4 symmetric weights, one scale per 128 inputs, round-to-nearest; activations 16-bit",
    ),
}

SAFETENSORS_DTYPES = {
    "BF16": "bfloat16",
    "F16": "float16",
    "F32": "float32",
    "F64": "float64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I8": "int8",
    "U8": "uint8",
    "I16": "int16",
    "I32": "int32",
    "I64": "int64",
    "BOOL": "bool",
}
FLOAT_DTYPES = ("BF16", "F16", "F32")


@dataclass(frozen=True)
class QuantizedRows:
    """Some rows of a weight, quantized.

    Attributes:
        weight: FP8/INT8 values ``[rows, in]``, or int32 words ``[rows, in/8]`` when packed.
        scale: ``[rows, 1]`` or ``[rows, in/group]`` in the weight's dtype.
        weight_square_sum: the sum of squares of the original rows.
        error_square_sum: the sum of squares of (original - dequantized).
    """

    weight: torch.Tensor
    scale: torch.Tensor
    weight_square_sum: float
    error_square_sum: float


def compute_scale(weight: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """The symmetric scales compressed-tensors' ``calculate_qparams`` gives these rows, in their dtype.

    The absolute maximum over a row (or group) equals compressed-tensors' ``max(|min(x, 0)|,
    |max(x, 0)|)`` exactly; dividing a 16-bit tensor by a Python float rounds once, as it does there.
    """
    import torch

    if scheme.group_size is None:
        absmax = weight.abs().amax(dim=-1, keepdim=True)
    else:
        absmax = weight.unflatten(-1, (-1, scheme.group_size)).abs().amax(dim=-1)
    scale = absmax / scheme.half_range
    eps = torch.finfo(weight.dtype).eps
    return torch.where(scale == 0, torch.tensor(eps, dtype=scale.dtype), scale)


def quantize_with_scale(weight: torch.Tensor, scale: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """Quantizes rows with given scales: ``clamp(W / scale + 0)`` then round (INT) or cast (FP8).

    Returns int8 values for INT schemes (4-bit values in int8 before packing) and float8_e4m3fn for FP8.
    """
    import torch

    if scheme.group_size is not None:
        grouped = weight.unflatten(-1, (-1, scheme.group_size))
        scaled = grouped / scale.unsqueeze(-1)
    else:
        grouped = weight
        scaled = weight / scale
    # compressed-tensors adds its (zero) zero point in the weight's dtype: -0.0 becomes +0.0,
    # which matters for the FP8 bit pattern.
    scaled = scaled + torch.zeros((), dtype=weight.dtype)
    clamped = torch.clamp(scaled, scheme.q_min, scheme.q_max)
    if scheme.kind == "float":
        quantized = clamped.to(torch.float8_e4m3fn)
    else:
        quantized = torch.round(clamped).to(torch.int8)
    return quantized.flatten(start_dim=-2) if scheme.group_size is not None else quantized


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Packs int8 values in -8..7 into int32 words: ``q + 8``, eight per word, lowest nibble first."""
    import torch

    rows, cols = values.shape
    unsigned = (values + 8).to(torch.uint8).view(rows, cols // INT4_PACK_FACTOR, INT4_PACK_FACTOR)
    shifts = torch.arange(INT4_PACK_FACTOR, dtype=torch.int32) * 4
    return (unsigned.to(torch.int32) << shifts).sum(dim=2, dtype=torch.int32)


def dequantize(quantized: torch.Tensor, scale: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """Float32 reconstruction of unpacked quantized rows (for measuring error)."""
    import torch

    if quantized.dtype == torch.float8_e4m3fn:
        # torch's FP8 -> float32 cast is scalar code; a 256-entry table lookup gives the same values
        # several times faster.
        table = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)
        values = torch.take(table, quantized.view(torch.uint8).to(torch.int64))
    else:
        values = quantized.to(torch.float32)
    if scheme.group_size is None:
        return values.mul_(scale.to(torch.float32))
    grouped = values.unflatten(-1, (-1, scheme.group_size)).mul_(scale.to(torch.float32).unsqueeze(-1))
    return grouped.flatten(start_dim=-2)


def quantize_rows(weight: torch.Tensor, scheme: Scheme, measure_error: bool = True) -> QuantizedRows:
    """Quantizes a block of whole rows of a Linear weight with ``scheme``.

    Rows are independent under per-channel and per-group scales, so quantizing a weight block by
    block gives exactly the tensors quantizing it whole would. Blocks of about 128k elements are
    fastest on CPU: larger temporaries cost more in fresh-page faults than the arithmetic.

    Args:
        weight: ``[rows, in_features]`` in bf16, fp16 or fp32.
        scheme: the scheme to apply.
        measure_error: also compute the squared error of the dequantized rows.
    """
    import torch

    scale = compute_scale(weight, scheme)
    quantized = quantize_with_scale(weight, scale, scheme)
    weight_sq = error_sq = 0.0
    if measure_error:
        original = weight.to(torch.float32, copy=True).reshape(-1)
        weight_sq = float(torch.dot(original, original))
        difference = original.sub_(dequantize(quantized, scale, scheme).reshape(-1))
        error_sq = float(torch.dot(difference, difference))
    stored = pack_int4(quantized) if scheme.packed else quantized
    return QuantizedRows(stored, scale, weight_sq, error_sq)
