"""The data-free schemes against compressed-tensors' own functions, bit for bit, and the config it validates."""

from __future__ import annotations

import copy

import pytest
import torch
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32
from compressed_tensors.quantization import QuantizationConfig, preset_name_to_scheme
from compressed_tensors.quantization.lifecycle.forward import dequantize, quantize
from compressed_tensors.quantization.utils import calculate_qparams

from engine.quantize.config import COMPRESSED_TENSORS_VERSION, quantization_config
from engine.quantize.schemes import SCHEMES, Scheme, compute_scale, quantize_rows, quantize_with_scale

METHODS = sorted(SCHEMES)
DTYPES = [torch.bfloat16, torch.float16]


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


def reference(weight: torch.Tensor, scheme: Scheme) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and quantized values from compressed-tensors: min/max per row or group, calculate_qparams, quantize."""
    args = preset_name_to_scheme(scheme.preset, ["Linear"]).weights
    assert args is not None
    if args.group_size:
        grouped = weight.unflatten(-1, (-1, args.group_size))
        low, high = torch.amin(grouped, dim=-1), torch.amax(grouped, dim=-1)
    else:
        low, high = torch.amin(weight, dim=-1, keepdim=True), torch.amax(weight, dim=-1, keepdim=True)
    scale, zero_point = calculate_qparams(low, high, args)
    target = torch.float8_e4m3fn if scheme.kind == "float" else torch.int8
    return scale, quantize(weight, scale, zero_point, args, dtype=target)


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
    scale = compute_scale(weight, scheme)
    assert scale.dtype == dtype
    assert same_bits(scale, expected_scale)
    assert same_bits(quantize_with_scale(weight, scale, scheme), expected_values)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_int4_packing_matches_compressed_tensors(dtype: torch.dtype) -> None:
    scheme = SCHEMES["w4a16"]
    weight = sample_weight(dtype, 3)
    _, values = reference(weight, scheme)
    packed = quantize_rows(weight, scheme).weight
    assert packed.dtype == torch.int32
    assert packed.shape == (weight.shape[0], weight.shape[1] // 8)
    assert torch.equal(packed, pack_to_int32(values, 4))
    assert torch.equal(unpack_from_int32(packed, 4, weight.shape), values)


def test_int4_packing_puts_the_first_value_in_the_lowest_nibble() -> None:
    from engine.quantize.schemes import pack_int4

    values = torch.tensor([[-8, -7, 0, 1, 2, 3, 6, 7]], dtype=torch.int8)
    word = int(pack_int4(values)[0, 0]) & 0xFFFFFFFF
    assert [(word >> (4 * i)) & 0xF for i in range(8)] == [0, 1, 8, 9, 10, 11, 14, 15]


@pytest.mark.parametrize("method", METHODS)
def test_quantizing_in_row_blocks_equals_quantizing_whole(method: str) -> None:
    scheme = SCHEMES[method]
    weight = sample_weight(torch.bfloat16, 4)
    whole = quantize_rows(weight, scheme)
    halves = [quantize_rows(weight[:17], scheme), quantize_rows(weight[17:], scheme)]
    assert same_bits(whole.weight, torch.cat([half.weight for half in halves]))
    assert same_bits(whole.scale, torch.cat([half.scale for half in halves]))
    assert whole.error_square_sum == pytest.approx(sum(half.error_square_sum for half in halves))


@pytest.mark.parametrize("method", METHODS)
def test_measured_error_is_compressed_tensors_dequantization_error(method: str) -> None:
    scheme = SCHEMES[method]
    weight = sample_weight(torch.bfloat16, 5)
    scale, values = reference(weight, scheme)
    restored = dequantize(values, scale.float(), dtype=torch.float32)
    expected = float(torch.sum((weight.float() - restored) ** 2))
    assert quantize_rows(weight, scheme).error_square_sum == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("method", "preset"), [("fp8", "FP8_DYNAMIC"), ("int8-w8a8", "W8A8"), ("w4a16", "W4A16")]
)
def test_quantization_config_is_what_compressed_tensors_writes(method: str, preset: str) -> None:
    scheme = SCHEMES[method]
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
    ).model_dump(exclude={"quant_method"})
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
        ("int8-w8a8", "_is_dynamic_token_w8a8"),
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
