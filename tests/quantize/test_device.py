"""The compute device: --device choices, the GPU's code path giving the CPU's bits, and no host tensor in device math."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.errors import QuantTuiError
from engine.quantize import work_split
from engine.quantize.device import ComputeDevice, GpuPeak, check_device_for_method, resolve_device
from engine.quantize.request import DATA_FREE_METHODS, QuantizeRequest
from engine.quantize.runner import preflight, quantize_model
from engine.quantize.scheme_math import absolute_max, dequantize, global_scale_from_absmax, quantize_rows
from engine.quantize.schemes import SCHEMES
from tests.quantize.quantize_support import build_tiny_llama

CUDA = torch.cuda.is_available()
NO_CUDA = "torch sees no CUDA GPU here (a CPU build): the GPU run itself is compared where there is one"
# Items of 32k elements: the tiny Llama's weights (32k-196k elements) span one to six items.
SMALL_CHUNK = 1 << 15


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("device")
    return {dtype: build_tiny_llama(root / f"tiny-{dtype}", dtype=dtype) for dtype in ("bfloat16", "float16")}


def output_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.safetensors"))}


def test_cpu_is_the_host_in_small_blocks() -> None:
    device = resolve_device("cpu")
    assert (device.type, device.name, device.is_accelerator) == ("cpu", "cpu", False)
    assert device.block_elements == work_split.BLOCK_ELEMENTS


def test_auto_is_cuda_exactly_when_torch_sees_a_gpu() -> None:
    device = resolve_device("auto")
    assert device.type == ("cuda" if CUDA else "cpu")
    # A GPU quantizes a whole item at once (one launch per kernel), the CPU in cache-sized blocks.
    assert device.block_elements == (work_split.CHUNK_ELEMENTS if CUDA else work_split.BLOCK_ELEMENTS)


@pytest.mark.skipif(CUDA, reason="torch sees a CUDA GPU here, so --device cuda is a valid choice")
def test_cuda_without_a_gpu_is_one_line_saying_what_to_do() -> None:
    with pytest.raises(QuantTuiError) as raised:
        resolve_device("cuda")
    message = str(raised.value)
    assert "\n" not in message
    assert "--device cuda" in message and "sees no CUDA GPU" in message and "--device cpu" in message


def test_an_unknown_device_names_the_choices() -> None:
    with pytest.raises(QuantTuiError, match="unknown device 'tpu'; use one of auto, cpu, cuda"):
        resolve_device("tpu")


@pytest.mark.parametrize(("choice", "refused"), [("auto", False), ("cpu", True), ("cuda", True)])
def test_calibrated_methods_take_no_device(choice: str, refused: bool) -> None:
    check_device_for_method(choice, calibrated=False)
    if refused:
        with pytest.raises(QuantTuiError, match="llm-compressor places a calibrated run itself"):
            check_device_for_method(choice, calibrated=True)
    else:
        check_device_for_method(choice, calibrated=True)


@pytest.mark.skipif(CUDA, reason="torch sees a CUDA GPU here")
def test_preflight_refuses_cuda_before_reading_weights(tiny: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(QuantTuiError, match="sees no CUDA GPU"):
        preflight(QuantizeRequest(tiny["bfloat16"], "fp8", output=tmp_path / "out", device="cuda"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("method", DATA_FREE_METHODS)
def test_the_gpu_code_path_writes_the_cpu_paths_bits(
    tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, dtype: str
) -> None:
    """The GPU's path run on the CPU: rows sent to a device and back, a whole item per block, several items a weight."""
    source = tiny[dtype]
    default = quantize_model(QuantizeRequest(source, method, output=tmp_path / "default", workers=2))
    assert default.device == "cpu" and default.peak_gpu_bytes == 0
    monkeypatch.setattr(work_split, "CHUNK_ELEMENTS", SMALL_CHUNK)
    as_on_a_gpu = ComputeDevice(type="cpu", block_elements=SMALL_CHUNK, name="cpu, split as on a GPU")
    moved = quantize_model(
        QuantizeRequest(source, method, output=tmp_path / "moved", workers=3), device=as_on_a_gpu
    )
    assert moved.device == "cpu, split as on a GPU"
    assert output_bytes(moved.output) == output_bytes(default.output)
    assert (moved.output / "config.json").read_bytes() == (default.output / "config.json").read_bytes()


@pytest.mark.skipif(not CUDA, reason=NO_CUDA)
@pytest.mark.parametrize("method", DATA_FREE_METHODS)
def test_a_cuda_run_writes_the_cpu_runs_bits(tiny: dict[str, Path], tmp_path: Path, method: str) -> None:
    source = tiny["bfloat16"]
    on_cpu = quantize_model(QuantizeRequest(source, method, output=tmp_path / "cpu", device="cpu"))
    on_gpu = quantize_model(QuantizeRequest(source, method, output=tmp_path / "gpu", device="cuda"))
    assert on_gpu.device.startswith("cuda:") and on_gpu.peak_gpu_bytes > 0
    assert output_bytes(on_gpu.output) == output_bytes(on_cpu.output)


@pytest.mark.parametrize("method", sorted(SCHEMES))
def test_device_math_makes_every_tensor_on_the_weights_device(method: str) -> None:
    """On the meta device (shapes without values) a host constant mixed into the math shows as a host result.

    A CPU tensor of more than zero dimensions in a meta (or CUDA) operation is an error, and an
    operation on a host table with device indices gives a host tensor: either fails here, where on
    a GPU it would fail at the first weight.
    """
    scheme = SCHEMES[method]
    weight = torch.empty(256, 384, dtype=torch.bfloat16, device="meta")
    global_scale = global_scale_from_absmax(absolute_max(weight)) if scheme.global_scale else None
    if global_scale is not None:
        assert global_scale.device.type == "meta" and global_scale.dtype == torch.float32
    quantized = quantize_rows(weight, scheme, measure_error=False, global_scale=global_scale)
    host = quantize_rows(
        torch.zeros(256, 384, dtype=torch.bfloat16),
        scheme,
        measure_error=False,
        global_scale=None if global_scale is None else torch.ones(1),
    )
    for made, expected in ((quantized.weight, host.weight), (quantized.scale, host.scale)):
        assert made.device.type == "meta"
        assert (made.shape, made.dtype) == (expected.shape, expected.dtype)


@pytest.mark.parametrize("method", sorted(SCHEMES))
def test_dequantizing_on_a_device_stays_there(method: str) -> None:
    scheme = SCHEMES[method]
    host = quantize_rows(
        torch.zeros(256, 384, dtype=torch.bfloat16), scheme, measure_error=False, global_scale=torch.ones(1)
    )
    if scheme.packed or scheme.kind == "fp4":
        # The error is measured on unpacked values: codes (FP4) or int8 values, one per weight.
        values = torch.empty(
            256, 384, dtype=torch.uint8 if scheme.kind == "fp4" else torch.int8, device="meta"
        )
    else:
        values = torch.empty(host.weight.shape, dtype=host.weight.dtype, device="meta")
    scale = torch.empty(host.scale.shape, dtype=host.scale.dtype, device="meta")
    global_scale = torch.empty(1, device="meta") if scheme.global_scale else None
    restored = dequantize(values, scale, scheme, global_scale)
    assert restored.device.type == "meta" and restored.shape == (256, 384)


@pytest.mark.parametrize("method", sorted(SCHEMES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_scale_divisor_is_exact_in_the_16_bit_dtypes(method: str, dtype: torch.dtype) -> None:
    """Scales divide by the divisor as a tensor of the weight's dtype (a GPU divides by that, not by a
    reciprocal): the same number as compressed-tensors' Python float only where it is exact there."""
    divisor = SCHEMES[method].half_range
    assert torch.tensor(divisor, dtype=dtype).item() == divisor


def test_gpu_peak_is_zero_on_the_cpu() -> None:
    with GpuPeak(resolve_device("cpu")) as peak:
        torch.ones(1 << 20)
    assert peak.bytes == 0
