"""Calibrated methods (GPTQ, AWQ, SmoothQuant) through llm-compressor, run in its own environment as a subprocess.

quant-tui runs ``llmcompressor_worker.py`` with the environment of ``llmcompressor_env`` and reads
its JSON-line progress.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from engine.errors import QuantTuiError
from engine.plan.methods import METHODS, default_output_dir, method
from engine.process.child import ChildProcess
from engine.quantize.llmcompressor_env import (
    ENVIRONMENT_BYTES,
    ensure_llmcompressor_env,
    llmcompressor_python,
)
from engine.quantize.output_checks import check_disk_space, check_output
from engine.quantize.request import (
    CALIBRATED_METHODS,
    LayerError,
    ProgressCallback,
    QuantizeReport,
    QuantizeRequest,
    stage_progress,
)
from engine.quantize.staging import PeakRss, QuantizeCancelled, publish, staging_folder
from engine.quantize.tensor_plan import build_plan, check_source
from engine.units import format_bytes

WORKER = Path(__file__).with_name("llmcompressor_worker.py")
# The model in memory in its dtype, plus llm-compressor's Hessians, activations and a copy on save.
MEMORY_FACTOR = 2.5
# Calibrated methods that quantize the original weights without rescaling them first.
GPTQ_ONLY: tuple[str, ...] = tuple(record.name for record in METHODS if record.plain_gptq)


def calibration_file(request: QuantizeRequest) -> Path:
    """The calibration text for a request: the user's file, or the demo corpus for the demo model.

    Raises:
        QuantTuiError: no file was named for a model other than the demo, or it cannot be read.
    """
    if request.calibration is not None:
        path = Path(request.calibration).expanduser()
        if not path.is_file() or not os.access(path, os.R_OK):
            raise QuantTuiError(f"calibration file {path} is not a readable file; pass a .txt or .jsonl file")
        if path.stat().st_size < 200:
            raise QuantTuiError(
                f"calibration file {path} is nearly empty; give it a few hundred words of typical text"
            )
        return path
    from engine.model.demo import demo_corpus_path, is_demo_model_complete

    if is_demo_model_complete(request.source):
        return demo_corpus_path("calibration")
    raise QuantTuiError(
        f"{request.method} calibrates on sample text: pass --calibration FILE (.txt paragraphs or .jsonl with "
        "a 'text' field, typical of what the model will serve)"
    )


def size_plan_method(name: str) -> str:
    """The data-free method whose planner sizes ``name``'s output: the one it is served as, or one with its weight layout.

    A calibrated method served in a format no data-free method writes (NVFP4 W4A4: its weights are
    laid out as NVFP4A16's, plus one activation global scale per layer) is sized by the data-free
    method with the same weight bits, group size and scale bytes.
    """
    served = method(name).format_name
    if served not in CALIBRATED_METHODS:
        return served
    weights = method(name).weights
    for candidate in METHODS:
        if candidate.producer == "data-free" and (
            candidate.weights.bits,
            candidate.weights.group_size,
            candidate.weights.scale_bytes,
        ) == (weights.bits, weights.group_size, weights.scale_bytes):
            return candidate.name
    raise QuantTuiError(f"no data-free method has {name}'s weight layout; quant-tui cannot size its output")


@dataclass(frozen=True)
class CalibratedPreflight:
    """What the checks of a calibrated request decided.

    Attributes:
        calibration: the calibration text file.
        estimated_output_bytes: the output's size, from the data-free plan of the same layout.
        unquantized_linear: the checkpoint's Linear-like modules kept 16-bit (that plan's choice:
            lm_head, routers, what vLLM builds without the quantization config, the user's
            ``--ignore``), which the worker leaves out of its recipe.
    """

    calibration: Path
    estimated_output_bytes: int
    unquantized_linear: tuple[str, ...]


def preflight_calibrated(request: QuantizeRequest) -> CalibratedPreflight:
    """Checks a calibrated request; returns the calibration file, the output size and the kept layers.

    Raises:
        QuantTuiError: the first problem, in one line (source, calibration file, output, disk, memory).
    """
    import psutil

    check_source(request)
    calibration = calibration_file(request)
    output = request.output or default_output_dir(request.source, request.method)
    # The output has the layout of the data-free method it is served as (W4A16 plus zero points for
    # AWQ, W8A16, INT8 W8A8): that method's plan checks shapes and size.
    served = size_plan_method(request.method)
    plan = build_plan(replace(request, method=served, output=output, calibration=None))
    check_output(request.source, output)
    needed_disk = int(plan.estimated_output_bytes * 1.1)
    if llmcompressor_python() is None:
        needed_disk += ENVIRONMENT_BYTES
    check_disk_space(output, needed_disk)
    needed_memory = int(plan.input_bytes * MEMORY_FACTOR)
    available = psutil.virtual_memory().available
    if available < needed_memory:
        raise QuantTuiError(
            f"{request.method} loads the whole model: it needs about {format_bytes(needed_memory)} of memory, "
            f"{format_bytes(available)} is available; use the streaming w4a16 method instead"
        )
    return CalibratedPreflight(calibration, plan.estimated_output_bytes, plan.unquantized_linear)


def quantize_calibrated(
    request: QuantizeRequest,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> QuantizeReport:
    """Runs GPTQ or AWQ through llm-compressor in its own environment and publishes the checkpoint.

    Raises:
        QuantTuiError: pre-flight, install or quantization failure, or cancellation.
    """

    started = time.monotonic()
    checked = preflight_calibrated(request)
    output = request.output or default_output_dir(request.source, request.method)
    cancel = cancel or threading.Event()
    python = ensure_llmcompressor_env(on_progress, cancel)
    with PeakRss() as rss, staging_folder(output) as staging:
        worker_peak = _run_worker(python, request, checked, staging, on_progress, cancel)
        if cancel.is_set():
            raise QuantizeCancelled("quantization cancelled; nothing was written")
        # This process stays resident while it waits for the worker, so the two peaks add up; after
        # the worker has exited only this process's own (it reads the layer errors) counts.
        tree_peak = rss.sample() + worker_peak
        _emit(on_progress, "finishing", "writing the model card")
        report = _calibrated_report(request, output, staging, started, tree_peak)
        report = replace(report, peak_rss_bytes=max(tree_peak, rss.sample()))
        _write_card(report, staging)
        publish(staging, output)
    _emit(on_progress, "done", f"wrote {output}")
    return report


def _run_worker(
    python: Path,
    request: QuantizeRequest,
    checked: CalibratedPreflight,
    staging: Path,
    on_progress: ProgressCallback | None,
    cancel: threading.Event,
) -> int:
    """Runs the worker, relaying its JSON lines as progress; returns its peak RSS."""
    from engine.paths import cache_dir

    log_path = cache_dir() / "logs" / f"llmcompressor-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # The layers the data-free plan keeps 16-bit, by checkpoint name: the worker cannot import
    # quant-tui, so it reads them from this file (kept beside the log, for the record).
    ignore_path = log_path.with_suffix(".ignore.json")
    ignore_path.write_text(json.dumps(list(checked.unquantized_linear)) + "\n", encoding="utf-8")
    command = [
        str(python),
        str(WORKER),
        "--source",
        str(request.source),
        "--output",
        str(staging),
        "--method",
        request.method,
        "--calibration",
        str(checked.calibration),
        "--ignore-file",
        str(ignore_path),
        "--samples",
        str(request.samples),
    ]
    if request.kv_cache_scheme is not None:
        command += ["--kv-cache-scheme", request.kv_cache_scheme]
    peak = 0
    with (
        log_path.open("w", encoding="utf-8") as log,
        # Its own process group under the watchdog: a killed quant-tui never leaves a calibration running.
        ChildProcess(command, stderr=log, cwd=staging.parent, cancel=cancel) as child,
    ):
        peak = relay_progress(child.lines(), on_progress)
        returncode = child.wait()
    if cancel.is_set() or child.cancelled:
        raise QuantizeCancelled("quantization cancelled; nothing was written")
    if returncode != 0:
        raise QuantTuiError(
            f"llm-compressor failed on {request.source.name} (exit {returncode}): "
            f"{_last_error_line(log_path)}; full log: {log_path}"
        )
    return peak


def relay_progress(stream: Iterable[str], on_progress: ProgressCallback | None) -> int:
    """Turns the worker's JSON lines into progress snapshots; returns the peak RSS its last line reports."""
    peak = 0
    for line in stream:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        stage = str(event.get("stage", "calibrating"))
        if stage == "done":
            peak = int(event.get("peak_rss_bytes", 0))
            continue
        step, total = event.get("step"), event.get("total")
        message = str(event.get("message", ""))
        if step is not None and total:
            message = f"{message} batch {step}/{total}"
        _emit(on_progress, stage, message)
    return peak


def _last_error_line(log_path: Path) -> str:
    lines = [line.strip() for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or [line for line in lines if line] or ["no output"])[-1][:300]


def _calibrated_report(
    request: QuantizeRequest, output: Path, staging: Path, started: float, peak: int
) -> QuantizeReport:
    from engine.model.safetensors_headers import read_safetensors_headers
    from engine.quantize.tensor_plan import source_weight_files

    source_headers = read_safetensors_headers(source_weight_files(request.source))
    output_files = sorted(staging.glob("*.safetensors"))
    output_headers = read_safetensors_headers(output_files)
    quantized = sum(1 for header in output_headers if header.name.endswith(".weight_scale"))
    return QuantizeReport(
        source=request.source,
        output=output,
        method=request.method,
        input_bytes=sum(header.nbytes for header in source_headers),
        output_bytes=sum(path.stat().st_size for path in output_files),
        tensors_quantized=quantized,
        tensors_copied=len(source_headers) - quantized,
        seconds=time.monotonic() - started,
        peak_rss_bytes=peak,
        # AWQ and SmoothQuant rescale weights against the norms before they quantize, so only
        # plain GPTQ's weights can be compared with the originals one to one.
        layer_errors=gptq_layer_errors(request.source, staging) if request.method in GPTQ_ONLY else (),
        kv_cache_scheme=request.kv_cache_scheme,
    )


def _tensor_files(files: list[Path]) -> dict[str, Path]:
    from engine.model.safetensors_headers import read_tensor_locations

    located = {}
    for path in files:
        located.update(dict.fromkeys(read_tensor_locations(path), path))
    return located


def gptq_layer_errors(source: Path, output: Path) -> tuple[LayerError, ...]:
    """Relative error of each packed INT4/INT8 layer in ``output`` against the same weight in ``source``.

    Reads one layer at a time and dequantizes with compressed-tensors' own unpack/dequantize.
    """
    import torch
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from compressed_tensors.quantization.lifecycle.forward import dequantize

    from engine.model.safetensors_headers import open_tensors
    from engine.quantize.report import layer_error, worst_first
    from engine.quantize.tensor_plan import source_weight_files

    originals = _tensor_files(source_weight_files(source))
    written = _tensor_files(sorted(output.glob("*.safetensors")))

    def load(located: dict[str, Path], name: str) -> torch.Tensor:
        with open_tensors(located[name]) as reader:
            return reader.get_tensor(name)

    errors = []
    for name in sorted(written):
        if not name.endswith(".weight_packed"):
            continue
        module = name.removesuffix(".weight_packed")
        if f"{module}.weight" not in originals:
            continue
        shape = load(written, f"{module}.weight_shape").tolist()
        packed = load(written, name)
        bits = 32 * packed.shape[1] // shape[1]
        values = unpack_from_int32(packed, bits, torch.Size(shape))
        g_idx = load(written, f"{module}.weight_g_idx") if f"{module}.weight_g_idx" in written else None
        restored = dequantize(values, load(written, f"{module}.weight_scale").float(), g_idx=g_idx)
        original = load(originals, f"{module}.weight").float()
        difference = original - restored.float()
        errors.append(
            layer_error(
                module,
                float(torch.sum(original * original, dtype=torch.float64)),
                float(torch.sum(difference * difference, dtype=torch.float64)),
            )
        )
    return worst_first(errors)


def _write_card(report: QuantizeReport, staging: Path) -> None:
    from engine.quantize.report import model_card

    config = json.loads((staging / "config.json").read_text(encoding="utf-8"))
    quant = config.get("quantization_config") or {}
    card = model_card(
        report,
        method(report.method).description,
        str(quant.get("format", "pack-quantized")),
        tuple(quant.get("ignore") or ()),
    )
    (staging / "README.md").write_text(card, encoding="utf-8")


def _emit(on_progress: ProgressCallback | None, stage: str, message: str) -> None:
    if on_progress is not None:
        on_progress(stage_progress(stage, message))
