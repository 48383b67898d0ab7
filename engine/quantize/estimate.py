"""What a quantization will cost before it starts: peak host RAM, disk, time, from a stated memory model.

Data-free (streaming) runs hold, per thread in flight, one chunk of source rows twice (the rows read
and what is written from them) and the float temporaries of one quantization block; the
process itself (Python, torch, safetensors, and the CUDA runtime when the run is on a GPU) is
measured, not guessed, since the dry run has loaded the same libraries. On a GPU the float
temporaries are on the GPU, one whole chunk's per pool thread (a GPU quantizes a chunk at once).
NVFP4's measuring pass (the global scales) reads chunks and measures them in the same blocks, so a
thread measuring holds no more than one quantizing.

Calibrated runs (llm-compressor) run in a worker beside this process; their memory and time model
is ``engine.quantize.calibrated_cost``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.errors import QuantTuiError
from engine.plan.methods import default_output_dir
from engine.quantize.device import ComputeDevice, check_device_for_method, resolve_device
from engine.quantize.request import CALIBRATED_METHODS, QuantizeRequest
from engine.units import format_bytes

# The memory model's constants (see the module docstring); benchmarks/bench_quantize.py prints
# estimate / measured for each method so a drift shows.
FLOAT_TEMPORARY_BYTES_PER_ELEMENT = 24  # float32 copy, scaled, clamped, restored, difference, quantized
# Stated throughputs for the time estimate (the 2-core dev box; the benchmark prints the real ones).
STREAMING_BYTES_PER_S = 750 * 10**6
# CPU work beyond FP8/INT8's, in streaming bytes per quantized source byte, by format. Fitted to
# benchmarks/bench_quantize.py (1.59 GB Llama, 2 cores, after the integer abs-max and FP4 table
# kernels: fp8 3.4-3.6 s, w4a16 2.7-3.5 s, w8a16 3.0 s, nvfp4a16 4.4-5.6 s): INT4/INT8 packing
# now costs no more than FP8's casts; NVFP4's scales and codes still do.
EXTRA_WORK_PER_QUANTIZED_BYTE = {"nvfp4-pack-quantized": 0.3}


@dataclass(frozen=True)
class CostEstimate:
    """What one run needs, worked out before it starts.

    Attributes:
        method: the method estimated.
        peak_ram_bytes: peak resident memory of the quantizing processes.
        disk_bytes: what the output (and a first-use llm-compressor environment) writes.
        seconds: estimated wall time.
        available_ram_bytes: memory available now.
        free_disk_bytes: free space where the output goes.
        memory_model: one sentence saying what the RAM figure counts.
        refusal: why the run cannot fit, with what would, or None when it fits.
        device: where the run computes (``cpu``, ``cuda:0 (NVIDIA ...)``).
        peak_gpu_bytes: torch's peak GPU allocation on that device; 0 on the CPU.
    """

    method: str
    peak_ram_bytes: int
    disk_bytes: int
    seconds: float
    available_ram_bytes: int
    free_disk_bytes: int
    memory_model: str
    refusal: str | None
    device: str = "cpu"
    peak_gpu_bytes: int = 0

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``--dry-run --json``)."""
        return {
            "method": self.method,
            "peak_ram_bytes": self.peak_ram_bytes,
            "disk_bytes": self.disk_bytes,
            "seconds": round(self.seconds, 1),
            "available_ram_bytes": self.available_ram_bytes,
            "free_disk_bytes": self.free_disk_bytes,
            "memory_model": self.memory_model,
            "fits": self.refusal is None,
            "refusal": self.refusal,
            "device": self.device,
            "peak_gpu_bytes": self.peak_gpu_bytes,
        }


def _process_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _free_disk(request: QuantizeRequest) -> int:
    import shutil

    anchor = (request.output or default_output_dir(request.source, request.method)).parent
    while not anchor.exists():
        anchor = anchor.parent
    return shutil.disk_usage(anchor).free


@dataclass(frozen=True)
class WorkingSet:
    """What a data-free run holds beyond its process: on the host, and on the GPU (0 when on the CPU)."""

    host: int
    gpu: int


def streaming_working_bytes(plan: Any, workers: int, device: ComputeDevice) -> WorkingSet:
    """Per item in flight: source rows twice plus the float temporaries of a block, on ``device``."""
    from engine.model.safetensors_headers import TORCH_DTYPES
    from engine.quantize import work_split

    if not plan.tensors:
        return WorkingSet(0, 0)
    import torch

    largest_host = largest_gpu = 0
    for tensor in plan.tensors:
        element = torch.empty((), dtype=getattr(torch, TORCH_DTYPES[tensor.dtype])).element_size()
        cols = tensor.shape[1] if len(tensor.shape) == 2 else max(1, tensor.nbytes // element)
        rows_per_item = max(1, work_split.CHUNK_ELEMENTS // cols)
        block_rows = max(1, device.block_elements // cols)
        if tensor.action == "quantize":
            rows_per_item = work_split.whole_scale_rows(rows_per_item, plan.scheme)
            block_rows = work_split.whole_scale_rows(block_rows, plan.scheme)
        rows = min(rows_per_item, tensor.shape[0] if tensor.shape else 1)
        host = 2 * rows * cols * element
        if tensor.action == "quantize":
            temporaries = min(block_rows, rows) * cols * FLOAT_TEMPORARY_BYTES_PER_ELEMENT
            if device.is_accelerator:
                largest_gpu = max(largest_gpu, rows * cols * element + temporaries)
            else:
                host += temporaries
        largest_host = max(largest_host, host)
    # The pool's threads each hold an item, and the calling thread finishes one more; only the pool's
    # threads compute.
    return WorkingSet(largest_host * (workers + 1), largest_gpu * workers)


def streaming_seconds(plan: Any, device: ComputeDevice) -> float:
    """A data-free run's time: bytes read and written at the streaming rate.

    NVFP4 reads its quantized weights twice: a pass a few weights ahead of the quantizing measures
    each weight's global scale (shared by fused siblings). Packing costs CPU time beyond
    the bytes moved, counted as EXTRA_WORK_PER_QUANTIZED_BYTE bytes' worth of streaming; on a GPU
    that arithmetic is not what limits the run, so it is not counted there.
    """
    quantized = sum(tensor.nbytes for tensor in plan.tensors if tensor.action == "quantize")
    passes = 2 if plan.scheme.global_scale else 1
    read = plan.input_bytes + (passes - 1) * quantized
    extra = 0.0 if device.is_accelerator else EXTRA_WORK_PER_QUANTIZED_BYTE.get(plan.scheme.format, 0.0)
    return (read + plan.estimated_output_bytes + quantized * extra) / STREAMING_BYTES_PER_S


def estimate_data_free(request: QuantizeRequest, device: ComputeDevice | None = None) -> CostEstimate:
    """The cost of a data-free run on ``device`` (default: the request's; runs the planner's checks, reads only headers)."""
    import psutil
    import torch

    from engine.quantize.tensor_plan import build_plan
    from engine.quantize.work_split import worker_count

    device = device or resolve_device(request.device)
    if device.is_accelerator:
        # The run's CUDA runtime and libraries, loaded now, so the process is measured as it will be.
        torch.zeros(1, device=device.type)
    plan = build_plan(request)
    workers = worker_count(request)
    working = streaming_working_bytes(plan, workers, device)
    process = _process_rss()
    peak = process + working.host
    disk = plan.estimated_output_bytes
    seconds = streaming_seconds(plan, device)
    available = int(psutil.virtual_memory().available)
    free = _free_disk(request)
    refusal = None
    if peak > available:
        refusal = (
            f"{request.method} needs about {format_bytes(peak)} of memory, {format_bytes(available)} is available; "
            "pass --workers 1 or close programs"
        )
    elif device.is_accelerator:
        gpu_free = int(torch.cuda.mem_get_info()[0])
        if working.gpu > gpu_free:
            refusal = (
                f"{request.method} on {device.name} needs about {format_bytes(working.gpu)} of GPU memory, "
                f"{format_bytes(gpu_free)} is free there; pass --workers 1 or --device cpu"
            )
    where = (
        f"; on {device.name}: {workers} chunks and their float temporaries" if device.is_accelerator else ""
    )
    memory_model = (
        f"this process ({format_bytes(process)} with torch) + {workers + 1} chunks of source rows "
        f"(read and written){'' if device.is_accelerator else ' and their float temporaries'}; "
        f"the model is streamed, never loaded{where}"
    )
    cost = _cost(request, peak, disk, seconds, available, free, refusal, memory_model)
    return replace(cost, device=device.name, peak_gpu_bytes=working.gpu)


def _cost(
    request: QuantizeRequest,
    peak: int,
    disk: int,
    seconds: float,
    available: int,
    free: int,
    memory_refusal: str | None,
    memory_model: str,
) -> CostEstimate:
    """The estimate, refused for memory (the caller's reason) or else for disk space."""
    refusal = memory_refusal
    if refusal is None and disk > free:
        refusal = f"the output needs {format_bytes(disk)}, {format_bytes(free)} is free there; pass --out on another disk"
    return CostEstimate(
        method=request.method,
        peak_ram_bytes=peak,
        disk_bytes=disk,
        seconds=seconds,
        available_ram_bytes=available,
        free_disk_bytes=free,
        memory_model=memory_model,
        refusal=refusal,
    )


def estimate_calibrated(request: QuantizeRequest, samples: int) -> CostEstimate:
    """The cost of an llm-compressor run by ``calibrated_cost``'s model (the whole model in memory, one layer's terms)."""
    import psutil

    from engine.quantize import calibrated_cost
    from engine.quantize.calibrated import GPTQ_ONLY, calibration_file, size_plan_method
    from engine.quantize.llmcompressor_env import ENVIRONMENT_BYTES, llmcompressor_python
    from engine.quantize.tensor_plan import build_plan, check_source

    config, _, _ = check_source(request)
    output = request.output or default_output_dir(request.source, request.method)
    streaming_method = size_plan_method(request.method)
    plan = build_plan(replace(request, method=streaming_method, output=output, calibration=None))
    seq_len = calibrated_cost.CALIBRATION_SEQ_LEN
    hessians, activations = calibrated_cost.calibrated_layer_bytes(config, samples, seq_len, 2)
    model_bytes = plan.input_bytes
    work = calibrated_cost.linear_work(
        config, [tensor.shape for tensor in plan.tensors if tensor.action == "quantize"]
    )
    process = _process_rss()
    calibrating = calibrated_cost.calibrating_bytes(process, model_bytes, hessians, activations)
    checking = calibrated_cost.checking_bytes(work.largest_weight) if request.method in GPTQ_ONLY else 0
    peak = max(calibrating, checking)
    disk = int(plan.estimated_output_bytes * 1.1) + (
        ENVIRONMENT_BYTES if llmcompressor_python() is None else 0
    )
    try:
        calibration: Path | None = calibration_file(request)
    except QuantTuiError:
        calibration = None  # the run refuses without one; the dry run counts full-length samples
    tokens = calibrated_cost.calibration_tokens(calibration, request.source, samples, seq_len)
    seconds = calibrated_cost.calibrated_seconds(request.method, model_bytes, work, tokens)
    available = int(psutil.virtual_memory().available)
    free = _free_disk(request)
    refusal = None
    if peak > available:
        room = available - (calibrating - activations)
        if checking <= available and room > 0 and activations > 0:
            fewer = int(samples * room / activations)
            refusal = (
                f"{request.method} needs about {format_bytes(peak)} of memory, {format_bytes(available)} is available; "
                f"--samples {max(fewer, 0)} (instead of {samples}) would fit, or use a data-free method"
            )
        else:
            refusal = (
                f"{request.method} loads the whole model: it needs about {format_bytes(peak)} of memory, "
                f"{format_bytes(available)} is available; use the streaming {streaming_method} "
                "method instead"
            )
    memory_model = (
        f"this process ({format_bytes(process)}) + llm-compressor's worker "
        f"({format_bytes(calibrated_cost.LLMCOMPRESSOR_WORKER_BYTES)}) + the whole model x "
        f"{calibrated_cost.MODEL_COPIES} ({format_bytes(int(model_bytes * calibrated_cost.MODEL_COPIES))}) + "
        f"one layer's Hessians ({format_bytes(hessians)}) + {samples} x {seq_len}-token activations in and "
        f"out of it ({format_bytes(activations)})"
    )
    if checking:
        memory_model += f"; then checking the layers' errors: this process with compressed-tensors ({format_bytes(checking)})"
    cost = _cost(request, peak, disk, seconds, available, free, refusal, memory_model)
    return replace(cost, device="llm-compressor's choice (a GPU when its torch sees one)")


def estimate(request: QuantizeRequest) -> CostEstimate:
    """The cost of ``request`` by its method's memory model.

    Raises:
        QuantTuiError: the request fails the pre-flight checks (bad source, output exists, ...).
    """
    check_device_for_method(request.device, request.method in CALIBRATED_METHODS)
    if request.method in CALIBRATED_METHODS:
        return estimate_calibrated(request, request.samples)
    return estimate_data_free(request)


def refuse_if_too_big(cost: CostEstimate) -> None:
    """Raises the one-line refusal of an estimate that does not fit.

    Raises:
        QuantTuiError: the run cannot fit, saying what would.
    """
    if cost.refusal is not None:
        raise QuantTuiError(cost.refusal)
