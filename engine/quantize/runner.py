"""Runs a quantization: pre-flight, the streaming data-free converter, and the hand-off to llm-compressor."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from engine.errors import QuantTuiError
from engine.quantize import work_split
from engine.quantize.config import quantized_model_config
from engine.quantize.converter import StreamingConverter
from engine.quantize.device import ComputeDevice, GpuPeak, check_device_for_method, resolve_device
from engine.quantize.report import model_card
from engine.quantize.request import (
    CALIBRATED_METHODS,
    KV_CACHE_SCHEMES,
    ProgressCallback,
    QuantizeReport,
    QuantizeRequest,
)
from engine.quantize.staging import PeakRss, QuantizeCancelled, publish, staging_folder
from engine.quantize.tensor_plan import QuantizePlan, build_plan
from engine.quantize.writer import ShardLayout, index_json
from engine.units import format_bytes

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9


def preflight(request: QuantizeRequest) -> None:
    """Checks a request without writing anything.

    Raises:
        QuantTuiError: one line naming the first problem: unreadable source, no config.json,
            already quantized, unsupported architecture or shape, output exists, not enough disk
            or memory.
    """
    check_kv_cache_scheme(request)
    check_device_for_method(request.device, request.method in CALIBRATED_METHODS)
    if request.method in CALIBRATED_METHODS:
        from engine.quantize.calibrated import preflight_calibrated

        preflight_calibrated(request)
        return
    device = resolve_device(request.device)
    plan = build_plan(request)
    _check_memory(plan, work_split.worker_count(request), device)


def check_kv_cache_scheme(request: QuantizeRequest) -> None:
    """Refuses a KV cache scheme quant-tui cannot calibrate, one asked of a data-free method, or no samples.

    Raises:
        QuantTuiError: one line naming the calibrated methods that write KV cache scales.
    """
    if request.calibration_samples is not None and request.calibration_samples < 1:
        raise QuantTuiError("--samples must be at least 1")
    scheme = request.kv_cache_scheme
    if scheme is None:
        return
    if scheme not in KV_CACHE_SCHEMES:
        raise QuantTuiError(f"unknown KV cache scheme {scheme!r}; use one of {', '.join(KV_CACHE_SCHEMES)}")
    if request.method not in CALIBRATED_METHODS:
        raise QuantTuiError(
            f"--kv-cache-scheme {scheme} measures KV cache scales on calibration text, which {request.method} "
            f"does not read; use a calibrated method ({', '.join(CALIBRATED_METHODS)}) or drop the option "
            f"(vLLM's --kv-cache-dtype {scheme} then uses scales of 1.0)"
        )


def _check_memory(plan: QuantizePlan, workers: int, device: ComputeDevice) -> None:
    """Refuses a run whose streaming working set (the estimate's memory model) exceeds the available memory."""
    import psutil

    from engine.quantize.estimate import streaming_working_bytes

    needed = streaming_working_bytes(plan, workers, device).host
    available = psutil.virtual_memory().available
    if available < needed:
        raise QuantTuiError(
            f"not enough free memory: quantizing with {workers} workers needs about {format_bytes(needed)}, "
            f"{format_bytes(available)} is available; pass --workers 1 or close programs"
        )


def quantize_model(
    request: QuantizeRequest,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    device: ComputeDevice | None = None,
) -> QuantizeReport:
    """Quantizes a model folder into a compressed-tensors checkpoint vLLM loads directly.

    The data-free methods stream: each weight is read from the source (plain reads, no memory
    map) a block of rows at a time, quantized by a pool of threads and written straight to its place in the
    output shard, so memory stays a small multiple of one block whatever the model size. The
    output is assembled in a hidden temporary folder next to the target and renamed at the end;
    a failure or cancellation removes it, and the source is only read.

    Args:
        request: what to quantize, how, and where.
        on_progress: called from the calling thread with progress snapshots.
        cancel: set it to stop the run; ``QuantizeCancelled`` is raised and nothing is left.
        max_shard_bytes: the largest output shard (tensors of one weight stay together).
        device: where to compute, overriding ``request.device`` (tests and benchmarks give a
            device with another block split).

    Raises:
        QuantTuiError: a pre-flight failure, a full disk, or ``QuantizeCancelled``.
    """
    check_kv_cache_scheme(request)
    check_device_for_method(request.device, request.method in CALIBRATED_METHODS)
    if request.method in CALIBRATED_METHODS:
        from engine.quantize.calibrated import quantize_calibrated

        return quantize_calibrated(request, on_progress=on_progress, cancel=cancel)
    started = time.monotonic()
    workers = work_split.worker_count(request)
    device = device or resolve_device(request.device)
    plan = build_plan(request)
    _check_memory(plan, workers, device)
    cancel = cancel or threading.Event()
    with PeakRss() as rss, staging_folder(plan.output) as staging, _torch_threads(workers):
        converter = StreamingConverter(plan, staging, workers, on_progress, cancel, rss, started, device)
        with GpuPeak(device) as gpu_peak:
            layouts, errors = converter.run(max_shard_bytes)
        converter.emit("finishing", "writing config, tokenizer and model card", force=True)
        _write_metadata(plan, staging, layouts)
        report = QuantizeReport(
            source=plan.source,
            output=plan.output,
            method=plan.method,
            input_bytes=plan.input_bytes,
            output_bytes=sum((staging / layout.filename).stat().st_size for layout in layouts),
            tensors_quantized=sum(1 for tensor in plan.tensors if tensor.action == "quantize"),
            tensors_copied=sum(1 for tensor in plan.tensors if tensor.action == "copy"),
            seconds=time.monotonic() - started,
            peak_rss_bytes=rss.sample(),
            layer_errors=errors,
            device=device.name,
            peak_gpu_bytes=gpu_peak.bytes,
        )
        card = model_card(report, plan.scheme.description, plan.scheme.format, plan.unquantized_linear)
        (staging / "README.md").write_text(card, encoding="utf-8")
        if cancel.is_set():
            raise QuantizeCancelled("quantization cancelled; nothing was written")
        publish(staging, plan.output)
    converter.emit("done", f"wrote {plan.output}", force=True)
    return report


def _write_metadata(plan: QuantizePlan, staging: Path, layouts: list[ShardLayout]) -> None:
    """Index (when sharded), config.json with quantization_config, and the copied small files."""
    if len(layouts) > 1:
        (staging / "model.safetensors.index.json").write_text(
            json.dumps(index_json(layouts), indent=2) + "\n", encoding="utf-8"
        )
    for path in plan.files_to_copy:
        shutil.copyfile(path, staging / path.name)
    config = quantized_model_config(plan.config, plan.scheme, plan.unquantized_linear)
    (staging / "config.json").write_text(
        json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


@contextlib.contextmanager
def _torch_threads(workers: int) -> Iterator[None]:
    """Gives each pool thread one intra-op thread while the pool runs, so cores are not oversubscribed."""
    import torch

    previous = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
