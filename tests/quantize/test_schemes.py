"""The data-free schemes against compressed-tensors' own functions, bit for bit, and the config it validates."""

from __future__ import annotations

import copy

import pytest
import torch
from compressed_tensors.compressors.nvfp4.helpers import pack_fp4_to_uint8, unpack_fp4_from_uint8
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32
from compressed_tensors.quantization import QuantizationConfig, preset_name_to_scheme
from compressed_tensors.quantization.lifecycle.forward import dequantize, quantize
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam
from compressed_tensors.quantization.utils.helpers import maybe_pad_tensor_for_block_quant

from engine.quantize.config import COMPRESSED_TENSORS_VERSION, quantization_config
from engine.quantize.scheme_math import (
    absolute_max,
    compute_scale,
    global_scale_from_absmax,
    pack_fp4,
    quantize_rows,
    quantize_with_scale,
)
from engine.quantize.schemes import SCHEMES, Scheme

METHODS = sorted(SCHEMES)
DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def sample_weight(dtype: torch.dtype, seed: int, rows: int = 48, cols: int = 384) -> torch.Tensor:
    """A weight with the awkward cases: zero rows and groups, -0.0, outliers, tiny and huge rows."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, cols, generator=generator) * 0.02
    weight[1] = 0.0
    weight[2, :128] = 0.0
    weight[3, 5] = -0.0
    weight[4, 7] = 3.0
    weight[5] = weight[5] * 1e-4
    weight[6] = weight[6] * 300.0
    weight[7, ::2] = -weight[7, ::2].abs()
    return weight.to(dtype)


def reference_global_scale(weight: torch.Tensor) -> torch.Tensor:
    """compressed-tensors' NVFP4 global scale from the whole tensor's min and max (generate_gparam)."""
    return generate_gparam(torch.amin(weight), torch.amax(weight))


def reference(
    weight: torch.Tensor, scheme: Scheme, global_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and quantized values from compressed-tensors: min/max per row, group or block, calculate_qparams, quantize.

    NVFP4 values come back as FP4 values in float32 (compressed-tensors' own representation).
    """
    args = preset_name_to_scheme(scheme.preset, ["Linear"]).weights
    assert args is not None
    if args.block_structure:
        height, width = args.block_structure
        padded = maybe_pad_tensor_for_block_quant(weight, (height, width))
        blocks = padded.unflatten(0, (-1, height)).unflatten(-1, (-1, width))
        low, high = torch.amin(blocks, dim=(1, 3)), torch.amax(blocks, dim=(1, 3))
    elif args.group_size:
        grouped = weight.unflatten(-1, (-1, args.group_size))
        low, high = torch.amin(grouped, dim=-1), torch.amax(grouped, dim=-1)
    else:
        low, high = torch.amin(weight, dim=-1, keepdim=True), torch.amax(weight, dim=-1, keepdim=True)
    if scheme.kind == "fp4" and global_scale is None:
        global_scale = reference_global_scale(weight)
    scale, zero_point = calculate_qparams(low, high, args, global_scale=global_scale)
    if scheme.kind == "fp4":
        return scale, quantize(weight, scale, zero_point, args, global_scale=global_scale)
    target = torch.float8_e4m3fn if scheme.kind == "float" else torch.int8
    return scale, quantize(weight, scale, zero_point, args, dtype=target)


def packed_reference(
    weight: torch.Tensor, scheme: Scheme, global_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """What compressed-tensors' compressor stores for the weight: packed words, or the FP8/INT8 values."""
    _, values = reference(weight, scheme, global_scale)
    if scheme.kind == "fp4":
        return pack_fp4_to_uint8(values)
    return pack_to_int32(values, scheme.num_bits) if scheme.packed else values


def same_bits(left: torch.Tensor, right: torch.Tensor) -> bool:
    if left.dtype != right.dtype or left.shape != right.shape:
        return False
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[left.element_size()]
    return torch.equal(left.contiguous().view(width), right.contiguous().view(width))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scale_and_values_match_compressed_tensors_bit_for_bit(
    method: str, dtype: torch.dtype, seed: int
) -> None:
    scheme = SCHEMES[method]
    weight = sample_weight(dtype, seed)
    expected_scale, expected_values = reference(weight, scheme)
    global_scale = global_scale_from_absmax(absolute_max(weight)) if scheme.global_scale else None
    if global_scale is not None:
        assert same_bits(global_scale, reference_global_scale(weight))
    scale = compute_scale(weight, scheme, global_scale)
    assert scale.dtype == (torch.float32 if scheme.kind == "fp4" else dtype)
    assert same_bits(scale, expected_scale)
    stored = quantize_rows(weight, scheme, global_scale=global_scale)
    assert same_bits(stored.weight, packed_reference(weight, scheme, global_scale))
    if scheme.kind == "fp4":
        assert same_bits(stored.scale, expected_scale.to(torch.float8_e4m3fn))
    else:
        assert same_bits(quantize_with_scale(weight, scale, scheme), expected_values)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("rows", "cols"), [(200, 384), (128, 300), (77, 130)])
def test_fp8_block_pads_partial_blocks_as_compressed_tensors(
    dtype: torch.dtype, rows: int, cols: int
) -> None:
    scheme = SCHEMES["fp8-block"]
    weight = sample_weight(dtype, 6, rows=rows, cols=cols)
    expected_scale, expected_values = reference(weight, scheme)
    assert expected_scale.shape == (-(-rows // 128), -(-cols // 128))
    stored = quantize_rows(weight, scheme)
    assert same_bits(stored.scale, expected_scale)
    assert same_bits(stored.weight, expected_values)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nvfp4_with_a_shared_fused_global_scale_matches_compressed_tensors(dtype: torch.dtype) -> None:
    """Fused siblings (q/k/v) share the smallest of their global scales, as llm-compressor sets them."""
    scheme = SCHEMES["nvfp4a16"]
    weight = sample_weight(dtype, 7)
    shared = reference_global_scale(weight) / 3
    expected_scale, _ = reference(weight, scheme, shared)
    stored = quantize_rows(weight, scheme, global_scale=shared)
    assert same_bits(stored.scale, expected_scale.to(torch.float8_e4m3fn))
    assert same_bits(stored.weight, packed_reference(weight, scheme, shared))


def test_nvfp4_of_an_all_zero_weight_is_compressed_tensors_fallback() -> None:
    weight = torch.zeros(16, 32, dtype=torch.bfloat16)
    global_scale = global_scale_from_absmax(absolute_max(weight))
    assert same_bits(global_scale, reference_global_scale(weight))
    stored = quantize_rows(weight, SCHEMES["nvfp4a16"], global_scale=global_scale)
    assert same_bits(stored.weight, packed_reference(weight, SCHEMES["nvfp4a16"]))
    # A zero group's FP8 scale is compressed-tensors' eps for FP8, 0.125.
    assert torch.all(stored.scale.to(torch.float32) == 0.125)


def test_nvfp4_packing_round_trips_through_compressed_tensors() -> None:
    scheme = SCHEMES["nvfp4a16"]
    weight = sample_weight(torch.bfloat16, 8)
    global_scale = global_scale_from_absmax(absolute_max(weight))
    stored = quantize_rows(weight, scheme, global_scale=global_scale)
    _, values = reference(weight, scheme)
    unpacked = unpack_fp4_from_uint8(stored.weight, weight.shape[0], weight.shape[1], dtype=torch.float32)
    assert torch.equal(unpacked, values)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("method", "per_word"), [("w4a16", 8), ("w8a16", 4)])
def test_int_packing_matches_compressed_tensors(dtype: torch.dtype, method: str, per_word: int) -> None:
    scheme = SCHEMES[method]
    weight = sample_weight(dtype, 3)
    _, values = reference(weight, scheme)
    packed = quantize_rows(weight, scheme).weight
    assert packed.dtype == torch.int32
    assert packed.shape == (weight.shape[0], weight.shape[1] // per_word)
    assert torch.equal(packed, pack_to_int32(values, scheme.num_bits))
    assert torch.equal(unpack_from_int32(packed, scheme.num_bits, weight.shape), values)


def test_int4_packing_puts_the_first_value_in_the_lowest_nibble() -> None:
    from engine.quantize.scheme_math import pack_int4

    values = torch.tensor([[-8, -7, 0, 1, 2, 3, 6, 7]], dtype=torch.int8)
    word = int(pack_int4(values)[0, 0]) & 0xFFFFFFFF
    assert [(word >> (4 * i)) & 0xF for i in range(8)] == [0, 1, 8, 9, 10, 11, 14, 15]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("rows", "cols", "slice_elements"), [(300, 384, 8 * 384), (256, 256, 100 * 256), (77, 130, 384)]
)
def test_fp8_block_quantized_in_row_slices_matches_compressed_tensors(
    dtype: torch.dtype, rows: int, cols: int, slice_elements: int
) -> None:
    """8-row slices, 100-row slices (crossing no band: 100 + 28), and columns not in whole blocks (not sliced)."""
    scheme = SCHEMES["fp8-block"]
    weight = sample_weight(dtype, 7, rows=rows, cols=cols)
    expected_scale, expected_values = reference(weight, scheme)
    stored = quantize_rows(weight, scheme, slice_elements=slice_elements)
    assert same_bits(stored.scale, expected_scale)
    assert same_bits(stored.weight, expected_values)
    whole = quantize_rows(weight, scheme)
    assert stored.error_square_sum == pytest.approx(whole.error_square_sum, rel=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_quantizing_in_row_blocks_equals_quantizing_whole(method: str) -> None:
    scheme = SCHEMES[method]
    weight = sample_weight(torch.bfloat16, 4, rows=300)
    global_scale = global_scale_from_absmax(absolute_max(weight)) if scheme.global_scale else None
    whole = quantize_rows(weight, scheme, global_scale=global_scale)
    # Block scales cut at block rows (the runner's items are multiples of the block height).
    cut = 128 if scheme.block else 17
    halves = [
        quantize_rows(weight[:cut], scheme, global_scale=global_scale),
        quantize_rows(weight[cut:], scheme, global_scale=global_scale),
    ]
    assert same_bits(whole.weight, torch.cat([half.weight for half in halves]))
    assert same_bits(whole.scale, torch.cat([half.scale for half in halves]))
    assert whole.error_square_sum == pytest.approx(sum(half.error_square_sum for half in halves), rel=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_measured_error_is_compressed_tensors_dequantization_error(method: str) -> None:
    scheme = SCHEMES[method]
    weight = sample_weight(torch.bfloat16, 5)
    scale, values = reference(weight, scheme)
    global_scale = reference_global_scale(weight) if scheme.global_scale else None
    args = preset_name_to_scheme(scheme.preset, ["Linear"]).weights
    restored = dequantize(values, scale.float(), args=args, dtype=torch.float32, global_scale=global_scale)
    expected = float(torch.sum((weight.float() - restored) ** 2))
    measured = quantize_rows(weight, scheme, global_scale=global_scale).error_square_sum
    assert measured == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("method", "preset"),
    [
        ("fp8", "FP8_DYNAMIC"),
        ("fp8-block", "FP8_BLOCK"),
        ("int8-w8a8", "W8A8"),
        ("w8a16", "W8A16"),
        ("w4a16", "W4A16"),
        ("nvfp4a16", "NVFP4A16"),
    ],
)
def test_quantization_config_is_what_compressed_tensors_writes(method: str, preset: str) -> None:
    scheme = SCHEMES[method]
    assert scheme.preset == preset
    ours = quantization_config(scheme, ["lm_head", "model.layers.0.mlp.gate"])
    validated = QuantizationConfig.model_validate(copy.deepcopy(ours))
    assert validated.format == scheme.format
    assert validated.quantization_status == "compressed"
    expected_scheme = preset_name_to_scheme(preset, ["Linear"])
    expected_scheme.format = scheme.format
    expected = QuantizationConfig(
        config_groups={"group_0": expected_scheme},
        format=scheme.format,
        ignore=["lm_head", "model.layers.0.mlp.gate"],
        quantization_status="compressed",
    ).model_dump(mode="json", exclude={"quant_method"})
    mine = {key: value for key, value in ours.items() if key in expected}
    assert mine == expected
    assert ours["quant_method"] == "compressed-tensors"


def test_config_matches_the_installed_compressed_tensors_version() -> None:
    import compressed_tensors

    assert compressed_tensors.__version__ == COMPRESSED_TENSORS_VERSION


def test_config_groups_reject_unknown_keys() -> None:
    broken = quantization_config(SCHEMES["fp8"], ["lm_head"])
    broken["config_groups"]["group_0"]["weights"]["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        QuantizationConfig.model_validate(broken)


@pytest.mark.parametrize(
    ("method", "predicate"),
    [
        ("fp8", "_is_fp8_w8a8"),
        ("fp8-block", "_is_fp8_w8a8"),
        ("int8-w8a8", "_is_dynamic_token_w8a8"),
        ("w8a16", "_is_wNa16_group_channel"),
        ("w4a16", "_is_wNa16_group_channel"),
    ],
)
def test_vllm_reads_the_config_as_the_intended_scheme(method: str, predicate: str) -> None:
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (
        CompressedTensorsConfig,
    )

    config = CompressedTensorsConfig.from_config(quantization_config(SCHEMES[method], ["lm_head"]))
    assert config.quant_format == SCHEMES[method].format
    assert config.ignore == ["lm_head"]
    scheme_dict = config.target_scheme_map["Linear"]
    assert getattr(config, predicate)(scheme_dict["weights"], scheme_dict["input_activations"])


def test_vllm_reads_nvfp4a16_as_weight_only_nvfp4() -> None:
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (
        CompressedTensorsConfig,
    )

    config = CompressedTensorsConfig.from_config(quantization_config(SCHEMES["nvfp4a16"], ["lm_head"]))
    scheme_dict = config.target_scheme_map["Linear"]
    assert config.quant_format == "nvfp4-pack-quantized"
    assert config._is_nvfp4_format(scheme_dict["weights"])
    assert scheme_dict["input_activations"] is None


def test_fp4_rounding_matches_compressed_tensors_for_every_float32_bucket() -> None:
    """The code table is indexed by a float32's top 12 bits and whether any lower bit is set: try every entry.

    Each bucket is sampled at its first pattern, the next, the middle and the last (a rounding
    bound sits exactly at a first pattern); NaN has no defined FP4 value and is left out.
    """
    from compressed_tensors.quantization.quant_args import FP4_E2M1_DATA

    high = torch.arange(1 << 12, dtype=torch.int64) << 20
    low = torch.tensor([0, 1, 0x80000, 0xFFFFF], dtype=torch.int64)
    patterns = (high[:, None] | low[None, :]).reshape(-1)
    values = patterns.to(torch.int32).view(torch.float32)
    values = values[~values.isnan()]
    values = values[: values.numel() // 16 * 16].reshape(-1, 16)
    scheme = SCHEMES["nvfp4a16"]
    ones = torch.ones(values.shape[0], 1)
    codes = quantize_with_scale(values, ones, scheme, global_scale=torch.ones(1))
    expected = pack_fp4_to_uint8(FP4_E2M1_DATA.cast_to_fp4(torch.clamp(values, -6.0, 6.0)))
    assert same_bits(pack_fp4(codes), expected)
