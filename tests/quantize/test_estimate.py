"""The cost estimate before a run: the memory model's terms worked out by hand, and refusals that say what fits."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import pytest

from engine.errors import QuantTuiError
from engine.quantize.calibrated_cost import calibrated_layer_bytes
from engine.quantize.estimate import estimate, refuse_if_too_big
from engine.quantize.request import QuantizeRequest
from tests.quantize.quantize_support import build_tiny_llama

# The tiny Llama (hidden 256, MLP 768, 4 heads of 64, 2 KV heads, 2 layers, vocab 512, bf16), by hand:
# Linear elements per layer q 65536 + k 32768 + v 32768 + o 65536 + gate/up/down 3 x 196608 = 786432,
# rows 256 + 128 + 128 + 256 + 768 + 768 + 256 = 2560, two 256-element norms per layer.
LAYER_ELEMENTS, LAYER_ROWS, LAYERS = 786432, 2560, 2
COPIED_16_BIT = 2 * 512 * 256 * 2 + 256 * 2 + LAYERS * 2 * 256 * 2  # embeddings, lm_head, norms
FP8_TENSOR_BYTES = LAYERS * (LAYER_ELEMENTS + LAYER_ROWS * 2) + COPIED_16_BIT
# w4a16: 4 bits per weight, a bf16 scale per 128 inputs, one int64 pair (weight_shape) per Linear.
W4A16_TENSOR_BYTES = LAYERS * (LAYER_ELEMENTS // 2 + LAYER_ELEMENTS // 128 * 2 + 7 * 16) + COPIED_16_BIT
# nvfp4a16: 4 bits per weight, an FP8 scale per 16 inputs, one float32 global scale per Linear.
NVFP4A16_TENSOR_BYTES = LAYERS * (LAYER_ELEMENTS // 2 + LAYER_ELEMENTS // 16 + 7 * 4) + COPIED_16_BIT

Memory = namedtuple("Memory", "available")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("estimate") / "tiny-llama")


def copied_files_bytes(folder: Path) -> int:
    skipped = ("config.json", "README.md")
    return sum(
        path.stat().st_size
        for path in folder.iterdir()
        if path.is_file() and path.suffix != ".safetensors" and path.name not in skipped
    )


@pytest.mark.parametrize(
    ("method", "tensor_bytes"),
    [("fp8", FP8_TENSOR_BYTES), ("w4a16", W4A16_TENSOR_BYTES), ("nvfp4a16", NVFP4A16_TENSOR_BYTES)],
)
def test_disk_is_the_output_tensors_and_copied_files(
    tiny: Path, tmp_path: Path, method: str, tensor_bytes: int
) -> None:
    cost = estimate(QuantizeRequest(tiny, method, output=tmp_path / "out"))
    assert cost.disk_bytes == tensor_bytes + copied_files_bytes(tiny)
    assert cost.refusal is None
    assert not (tmp_path / "out").exists()


def test_data_free_memory_is_the_process_plus_a_few_chunks(tiny: Path, tmp_path: Path) -> None:
    import psutil

    cost = estimate(QuantizeRequest(tiny, "fp8", output=tmp_path / "out", workers=2))
    process = psutil.Process().memory_info().rss
    # The largest item is a whole 768x256 bf16 weight (under one chunk), held twice (read and written)
    # (2 x 393216 B) plus one block of 512 rows x 256 float temporaries at 24 B (3145728 B),
    # by each of 2 pool threads and the calling thread.
    working = 3 * (2 * 768 * 256 * 2 + 512 * 256 * 24)
    assert cost.peak_ram_bytes - working == pytest.approx(process, rel=0.05)
    assert (cost.device, cost.peak_gpu_bytes) == ("cpu", 0)


def test_on_a_gpu_the_float_temporaries_of_whole_items_are_gpu_memory(tiny: Path, tmp_path: Path) -> None:
    """The memory model's arithmetic for a GPU run (a device described by hand: nothing runs on it)."""
    from engine.quantize import work_split
    from engine.quantize.device import ComputeDevice
    from engine.quantize.estimate import streaming_working_bytes
    from engine.quantize.tensor_plan import build_plan

    plan = build_plan(QuantizeRequest(tiny, "fp8", output=tmp_path / "out", workers=2))
    gpu = ComputeDevice(type="cuda", block_elements=work_split.CHUNK_ELEMENTS, name="cuda:0 (by hand)")
    working = streaming_working_bytes(plan, 2, gpu)
    # Host: the 768x256 bf16 rows read and written (2 x 393216 B) by 2 pool threads and the caller.
    assert working.host == 3 * 2 * 768 * 256 * 2
    # GPU: the rows sent (393216 B) and the whole item's float temporaries (196608 x 24 B), 2 threads.
    assert working.gpu == 2 * (768 * 256 * 2 + 768 * 256 * 24)


def test_a_calibration_that_does_not_fit_says_how_many_samples_would(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    fits = estimate(QuantizeRequest(tiny, "gptq-w4a16", output=tmp_path / "out"))
    _, activations = calibrated_layer_bytes(
        {"hidden_size": 256, "intermediate_size": 768, "num_attention_heads": 4}, 128, 512, 2
    )
    # Room for half of the 128 samples' activations and half a sample more (this process, measured
    # again by the second estimate, may have grown by a few pages since).
    available = fits.peak_ram_bytes - activations // 2 + activations // 256
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory(available))
    cost = estimate(QuantizeRequest(tiny, "gptq-w4a16", output=tmp_path / "out"))
    assert cost.refusal is not None and "\n" not in cost.refusal
    assert "--samples 64 (instead of 128) would fit" in cost.refusal
    with pytest.raises(QuantTuiError, match="--samples 64"):
        refuse_if_too_big(cost)


def test_a_streaming_run_that_does_not_fit_suggests_one_worker(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory(10**6))
    cost = estimate(QuantizeRequest(tiny, "fp8", output=tmp_path / "out"))
    assert cost.refusal is not None and "--workers 1" in cost.refusal


@pytest.mark.parametrize(
    ("method", "output_tensor_bytes", "extra_read_bytes"),
    [
        ("fp8", FP8_TENSOR_BYTES, 0),
        # Packing INT4 costs no streaming work beyond the bytes moved.
        ("w4a16", W4A16_TENSOR_BYTES, 0),
        # NVFP4 reads every quantized bf16 weight once more to measure its global scale, plus 0.3x work.
        ("nvfp4a16", NVFP4A16_TENSOR_BYTES, (1 + 0.3) * LAYERS * LAYER_ELEMENTS * 2),
    ],
)
def test_the_time_estimate_counts_every_byte_read_and_written(
    tiny: Path, tmp_path: Path, method: str, output_tensor_bytes: int, extra_read_bytes: float
) -> None:
    from engine.quantize.estimate import STREAMING_BYTES_PER_S

    source_bytes = LAYERS * LAYER_ELEMENTS * 2 + COPIED_16_BIT
    header_slack = 64 * 1024  # safetensors headers: a few KB per shard
    cost = estimate(QuantizeRequest(tiny, method, output=tmp_path / "out"))
    written = output_tensor_bytes + copied_files_bytes(tiny)
    expected = (source_bytes + extra_read_bytes + written) / STREAMING_BYTES_PER_S
    assert expected * (1 - 1e-9) <= cost.seconds <= expected + header_slack / STREAMING_BYTES_PER_S
