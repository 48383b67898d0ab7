"""Scale, quantize, pack and dequantize math for the data-free schemes, bit for bit as compressed-tensors does it."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.quantize.schemes import FP4_MAX, FP8_MAX, Scheme

if TYPE_CHECKING:
    import torch

# Where FP4 E2M1 rounding moves to the next magnitude (0, 0.5, 1, 1.5, 2, 3, 4, 6); compressed-tensors'
# cast_to_fp4 rounds ties to the even code, so the bound is strict at odd codes and inclusive at even ones.
_FP4_BOUNDS = (
    (0.25, False),
    (0.75, True),
    (1.25, False),
    (1.75, True),
    (2.5, False),
    (3.5, True),
    (5.0, False),
)
# compressed-tensors' replacement for a zero FP8 scale (_get_dtype_eps of float8_e4m3fn).
FP8_SCALE_EPS = 0.125


@dataclass(frozen=True)
class QuantizedRows:
    """Some rows of a weight, quantized.

    Attributes:
        weight: FP8/INT8 values ``[rows, in]``, or the packed words ``[rows, in/pack_factor]``.
        scale: ``[rows, 1]``, ``[rows, in/group]`` or ``[ceil(rows/128), ceil(in/128)]`` (block); in the
            weight's dtype, FP8 for NVFP4.
        weight_square_sum: the sum of squares of the original rows.
        error_square_sum: the sum of squares of (original - dequantized).
    """

    weight: torch.Tensor
    scale: torch.Tensor
    weight_square_sum: float
    error_square_sum: float


def _padded_blocks(weight: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """The weight zero-padded to whole blocks, as ``[row blocks, rows, column blocks, columns]`` (a view when unpadded)."""
    import torch

    rows, cols = weight.shape
    pad_rows, pad_cols = -rows % block[0], -cols % block[1]
    if pad_rows or pad_cols:
        weight = torch.nn.functional.pad(weight, (0, pad_cols, 0, pad_rows))
    return weight.reshape(weight.shape[0] // block[0], block[0], weight.shape[1] // block[1], block[1])


def _abs_max(values: torch.Tensor, dim: int | tuple[int, ...], keepdim: bool = False) -> torch.Tensor:
    """``values.abs().amax(dim)`` computed on the bit patterns, several times faster for 16-bit floats.

    With the sign bit cleared, IEEE floats order as their bit patterns read as integers, so the
    integer maximum is the absolute maximum exactly (-0.0 becomes 0.0; a NaN stays a NaN).
    """
    import torch

    width = {2: torch.int16, 4: torch.int32, 8: torch.int64}[values.element_size()]
    magnitude = values.view(width) & ((1 << (8 * values.element_size() - 1)) - 1)
    return magnitude.amax(dim=dim, keepdim=keepdim).view(values.dtype)


def absolute_max(weight: torch.Tensor) -> torch.Tensor:
    """The whole tensor's absolute maximum, in its dtype (what an NVFP4 global scale is computed from)."""
    return _abs_max(weight.reshape(-1), dim=0).reshape(1)


def global_scale_from_absmax(absmax: torch.Tensor) -> torch.Tensor:
    """compressed-tensors' ``generate_gparam``: ``448 * 6 / absmax`` in the weight's dtype, as FP32 ``[1]``.

    A zero (or non-finite) maximum gives 1.0, as compressed-tensors does.
    """
    import torch

    absmax = torch.clamp(absmax, min=torch.finfo(absmax.dtype).tiny)
    scale = FP8_MAX * FP4_MAX / absmax
    return torch.nan_to_num(scale, nan=1.0, posinf=1.0, neginf=1.0).to(torch.float32).reshape(1)


def compute_scale(
    weight: torch.Tensor, scheme: Scheme, global_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """The symmetric scales compressed-tensors' ``calculate_qparams`` gives these rows.

    The absolute maximum over a row, group or block equals compressed-tensors' ``max(|min(x, 0)|,
    |max(x, 0)|)`` exactly; dividing a 16-bit tensor by a Python float rounds once, as it does there.
    NVFP4 scales are then multiplied by the FP32 global scale and rounded to FP8 (returned as FP32
    holding FP8 values).
    """
    import torch

    if scheme.block is not None:
        absmax = _abs_max(_padded_blocks(weight, scheme.block), dim=(1, 3))
    elif scheme.group_size is None:
        absmax = _abs_max(weight, dim=-1, keepdim=True)
    else:
        absmax = _abs_max(weight.unflatten(-1, (-1, scheme.group_size)), dim=-1)
    # A divisor on the weight's device: CUDA multiplies by the reciprocal of a host scalar instead
    # of dividing (a bit off at times); a divisor tensor is divided by, rounded once, on either.
    scale = absmax / torch.full((), scheme.half_range, dtype=absmax.dtype, device=absmax.device)
    if scheme.kind == "fp4":
        if global_scale is None:
            raise ValueError("NVFP4 scales need the tensor's global scale")
        scale = torch.clamp(global_scale * scale, -FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).to(torch.float32)
        return scale.masked_fill_(scale == 0, FP8_SCALE_EPS)
    return scale.masked_fill_(scale == 0, torch.finfo(weight.dtype).eps)


@functools.cache
def _fp4_code_table(device: torch.device) -> torch.Tensor:
    """E2M1 codes by float32 bit pattern: entry ``2 * (bits >> 20) + (any of the low 20 bits set)``.

    Every rounding bound is a multiple of 2**21 as a bit pattern, so the top 12 bits (sign,
    exponent, 3 mantissa bits) fix the code except exactly on a bound, which the low bits tell.
    Built once per device from the bounds themselves (a constant of 8192 bytes); values are
    clamped to +-6 first and a NaN gets code 0, as comparing them would give.
    """
    import torch

    if device.type != "cpu":
        return _fp4_code_table(torch.device("cpu")).to(device)

    high = torch.arange(1 << 12, dtype=torch.int32) << 20
    samples = torch.clamp(
        torch.stack([high, high | 1], dim=-1).reshape(-1).view(torch.float32), -FP4_MAX, FP4_MAX
    )
    magnitude = samples.abs()
    code = torch.zeros(samples.shape, dtype=torch.uint8)
    for bound, inclusive in _FP4_BOUNDS:
        code += (magnitude >= bound) if inclusive else (magnitude > bound)
    return code | ((samples < 0).to(torch.uint8) << 3)


def _fp4_codes(scaled: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (sign in bit 3) of float32 values, clamped to +-6 and rounded as ``cast_to_fp4`` rounds."""
    import torch

    bits = scaled.contiguous().view(torch.int32).reshape(-1)
    index = (bits & 0xFFFFF).add_(0xFFFFF).bitwise_right_shift_(20)
    index += (bits >> 19).bitwise_and_(0x1FFE)
    return _fp4_code_table(scaled.device).index_select(0, index).view(scaled.shape)


def quantize_with_scale(
    weight: torch.Tensor,
    scale: torch.Tensor,
    scheme: Scheme,
    global_scale: torch.Tensor | None = None,
    slice_elements: int | None = None,
) -> torch.Tensor:
    """Quantizes rows with given scales: ``clamp(W / scale + 0)`` then round (INT) or cast (FP8, FP4).

    Returns int8 values for INT schemes (4-bit values in int8 before packing), float8_e4m3fn for
    FP8, and uint8 E2M1 codes (sign in bit 3, one per value) for NVFP4. ``slice_elements`` (block
    scales only) quantizes the rows in slices of about that many elements, each against its band's
    scale row: the same elementwise arithmetic, with temporaries small enough to stay in cache.
    """
    import torch

    if scheme.block is not None and slice_elements is not None and weight.shape[1] % scheme.block[1] == 0:
        return _quantize_block_slices(weight, scale, scheme, slice_elements)
    if scheme.block is not None:
        rows, cols = weight.shape
        # Divided in the block view, the result keeps the weight's own layout (no transpose to undo).
        scaled = _padded_blocks(weight, scheme.block) / scale[:, None, :, None]
    elif scheme.group_size is not None:
        effective = scale / global_scale if global_scale is not None else scale
        scaled = weight.unflatten(-1, (-1, scheme.group_size)) / effective.unsqueeze(-1)
    else:
        scaled = weight / scale
    if scheme.kind == "fp4":
        # FP32 quotients; the code table clamps and takes the sign from < 0 (so -0.0 is code 0).
        return _fp4_codes(scaled).flatten(start_dim=-2)
    target = torch.float8_e4m3fn if scheme.kind == "float" else torch.int8
    quantized = _onto_grid(scaled, scheme, weight.dtype).to(target)
    if scheme.block is not None:
        padded = quantized.reshape(quantized.shape[0] * quantized.shape[1], -1)
        return padded[:rows, :cols]
    return quantized.flatten(start_dim=-2) if scheme.group_size is not None else quantized


def _quantize_block_slices(
    weight: torch.Tensor, scale: torch.Tensor, scheme: Scheme, slice_elements: int
) -> torch.Tensor:
    """Block-scaled rows (whole column blocks) quantized a slice of rows at a time, no slice crossing a band.

    A 128-row band of a 4096-column weight is 512k elements: its float temporaries spill out of the
    cache, and quantizing it in 32-row slices is about twice as fast (each element is divided by the
    same scale, so the bits are the same).
    """
    import torch

    rows, cols = weight.shape
    height, width = scheme.block  # type: ignore[misc]
    step = max(1, min(height, slice_elements // cols))
    target = torch.float8_e4m3fn if scheme.kind == "float" else torch.int8
    out = torch.empty((rows, cols), dtype=target, device=weight.device)
    for band_start in range(0, rows, height):
        band_scale = scale[band_start // height][None, :, None]
        for start in range(band_start, min(rows, band_start + height), step):
            stop = min(rows, band_start + height, start + step)
            scaled = weight[start:stop].view(stop - start, cols // width, width) / band_scale
            out[start:stop].view(stop - start, cols // width, width).copy_(
                _onto_grid(scaled, scheme, weight.dtype)
            )
    return out


def _onto_grid(scaled: torch.Tensor, scheme: Scheme, weight_dtype: torch.dtype) -> torch.Tensor:
    """``scaled``, in place, as an FP8 or INT scheme's values before the cast: clamped, and rounded for INT."""
    import torch

    if scheme.kind == "float":
        # compressed-tensors adds its (zero) zero point in the weight's dtype: -0.0 becomes +0.0,
        # which matters for the FP8 bit pattern (INT rounds -0.0 to 0).
        scaled += torch.zeros((), dtype=weight_dtype, device=scaled.device)
    scaled.clamp_(scheme.q_min, scheme.q_max)
    return scaled if scheme.kind == "float" else scaled.round_()


def pack_int(values: torch.Tensor, num_bits: int) -> torch.Tensor:
    """Packs int8 values into int32 words: ``q + 2**(bits-1)``, ``32 // bits`` per word, lowest bits first.

    A row whose length is not a multiple of the pack factor is padded with zero codes, as
    compressed-tensors' ``pack_to_int32`` does. On a little-endian host a word's bytes are its
    values (8-bit) or pairs of nibbles (4-bit) in order, so packing is a byte view.
    """
    import torch

    factor = 32 // num_bits
    rows, cols = values.shape
    unsigned = (values + (1 << (num_bits - 1))).to(torch.uint8)
    if cols % factor:
        unsigned = torch.nn.functional.pad(unsigned, (0, -cols % factor))
    if sys.byteorder == "little" and num_bits in (4, 8):
        packed_bytes = _nibble_pairs(unsigned) if num_bits == 4 else unsigned
        return packed_bytes.contiguous().view(torch.int32)
    words = unsigned.view(rows, -1, factor).to(torch.int32)
    shifts = torch.arange(factor, dtype=torch.int32, device=values.device) * num_bits
    return (words << shifts).sum(dim=2, dtype=torch.int32)


def _nibble_pairs(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes a byte, the first in the low nibble: each pair read as one little-endian int16."""
    import torch

    if sys.byteorder != "little":
        pairs = codes.view(codes.shape[0], -1, 2)
        return pairs[..., 0] | (pairs[..., 1] << 4)
    pairs = codes.contiguous().view(torch.int16)
    return (pairs | (pairs >> 4)).to(torch.uint8)


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Packs int8 values in -8..7 into int32 words: ``q + 8``, eight per word, lowest nibble first."""
    return pack_int(values, 4)


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """Packs E2M1 codes two to a byte, the first in the low nibble (compressed-tensors' ``pack_fp4_to_uint8``)."""
    return _nibble_pairs(codes)


_FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def dequantize(
    quantized: torch.Tensor, scale: torch.Tensor, scheme: Scheme, global_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Float32 reconstruction of unpacked quantized rows (for measuring error)."""
    import torch

    if scheme.kind == "fp4":
        table = torch.tensor(_FP4_VALUES, device=quantized.device)
        values = table.index_select(0, quantized.reshape(-1).to(torch.int32)).view(quantized.shape)
    elif quantized.dtype == torch.float8_e4m3fn:
        # torch's FP8 -> float32 cast is scalar code; a 256-entry table lookup gives the same values
        # several times faster (index_select with int32 indices twice as fast again as take).
        table = (
            torch.arange(256, dtype=torch.uint8, device=quantized.device)
            .view(torch.float8_e4m3fn)
            .to(torch.float32)
        )
        codes = quantized.contiguous().view(torch.uint8).reshape(-1).to(torch.int32)
        values = table.index_select(0, codes).view(quantized.shape)
    else:
        values = quantized.to(torch.float32)
    scale = scale.to(torch.float32)
    if global_scale is not None:
        scale = scale / global_scale
    if scheme.block is not None:
        rows, cols = values.shape
        blocks = _padded_blocks(values, scheme.block).mul_(scale[:, None, :, None])
        return blocks.reshape(blocks.shape[0] * blocks.shape[1], -1)[:rows, :cols]
    if scheme.group_size is None:
        return values.mul_(scale)
    grouped = values.unflatten(-1, (-1, scheme.group_size)).mul_(scale.unsqueeze(-1))
    return grouped.flatten(start_dim=-2)


def quantize_rows(
    weight: torch.Tensor,
    scheme: Scheme,
    measure_error: bool = True,
    global_scale: torch.Tensor | None = None,
    slice_elements: int | None = None,
) -> QuantizedRows:
    """Quantizes a block of whole rows of a Linear weight with ``scheme``.

    Rows are independent under per-channel and per-group scales (and row blocks under block
    scales), so quantizing a weight block by block gives exactly the tensors quantizing it whole
    would; block-scaled weights must be cut at multiples of the block height. Blocks of about
    128k elements are fastest on CPU: larger temporaries cost more in fresh-page faults than the
    arithmetic.

    Args:
        weight: ``[rows, in_features]`` in bf16, fp16 or fp32.
        scheme: the scheme to apply.
        measure_error: also compute the squared error of the dequantized rows.
        global_scale: the whole tensor's FP32 global scale (NVFP4 only).
        slice_elements: block scales only: quantize in row slices of about this many elements
            (the scales are still computed over whole blocks).
    """
    import torch

    scale = compute_scale(weight, scheme, global_scale)
    quantized = quantize_with_scale(weight, scale, scheme, global_scale, slice_elements)
    weight_sq = error_sq = 0.0
    if measure_error:
        original = weight.to(torch.float32, copy=True).reshape(-1)
        weight_sq = float(torch.dot(original, original))
        restored = dequantize(quantized, scale, scheme, global_scale).reshape(-1)
        difference = original.sub_(restored)
        error_sq = float(torch.dot(difference, difference))
    if scheme.kind == "fp4":
        return QuantizedRows(pack_fp4(quantized), scale.to(torch.float8_e4m3fn), weight_sq, error_sq)
    stored = pack_int(quantized, scheme.num_bits) if scheme.packed else quantized
    return QuantizedRows(stored, scale, weight_sq, error_sq)
