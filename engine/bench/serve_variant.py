"""One variant of an A/B: its checkpoint (quantized if needed), its server plan, warm-up, load and quality."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from engine.bench.ab_result import BASELINE_METHOD, BenchError, BenchRequest, VariantResult
from engine.bench.load_result import LoadResult
from engine.bench.load_spec import LoadSpec
from engine.bench.loadgen import run_load, served_model_name
from engine.errors import QuantTuiError

if TYPE_CHECKING:
    from engine.bench.quality import QualityResult
    from engine.bench.result import BenchRun
    from engine.bench.sweep import SweepResult
    from engine.serve.launcher import VllmServer
    from engine.telemetry.snapshot import TelemetrySnapshot

__all__ = [
    "failure_message",
    "measure_load",
    "measure_variant",
    "prepare_variant",
    "variant_dir",
    "variant_server",
    "weights_bytes",
]

_WARMUP_REQUESTS = 2
# Process-tree memory and GPUs only; the server's /metrics window is sampled by engine.bench.server_truth.
_TELEMETRY_INTERVAL_S = 2.0


def weights_bytes(folder: Path) -> int:
    """Total size of a checkpoint's ``*.safetensors`` files."""
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def variant_server(request: BenchRequest, model_dir: Path) -> VllmServer:
    """A launcher for one variant, with the same settings for all: the variant's own server plan.

    The plan (``engine.plan.recommender.plan_checkpoint``) carries its prediction, so the server's
    ``comparison`` holds predicted vs. actual after start-up.
    """
    from engine.plan.recommender import PlanRequest, plan_checkpoint
    from engine.serve.launcher import ServerConfig, VllmServer

    gib = request.cpu_kvcache_gib
    whole = int(gib) if gib is not None and float(gib).is_integer() else None
    config = ServerConfig(
        model=model_dir,
        enforce_eager=request.enforce_eager,
        max_model_len=request.max_model_len,
        cpu_kvcache_gib=gib,
    )
    if gib is None or whole is not None:
        with contextlib.suppress(QuantTuiError):
            planned = plan_checkpoint(
                model_dir, PlanRequest(max_model_len=request.max_model_len, cpu_kvcache_gib=whole)
            ).server
            config = replace(planned, enforce_eager=request.enforce_eager or planned.enforce_eager)
    return VllmServer(config)


def variant_dir(request: BenchRequest, method: str) -> Path:
    from engine.plan.methods import default_output_dir

    if request.work_dir is None:
        return default_output_dir(request.model, method)
    return request.work_dir / default_output_dir(request.model, method).name


def prepare_variant(
    request: BenchRequest, method: str, cancel: threading.Event, report: Callable[[str, str], None]
) -> Path:
    """The checkpoint to serve for ``method``: the source itself for the baseline, else a quantized copy."""
    if method == BASELINE_METHOD:
        return request.model
    from engine.quantize.request import QuantizeProgress, QuantizeRequest
    from engine.quantize.runner import quantize_model

    output = variant_dir(request, method)
    if request.reuse and (output / "config.json").is_file():
        report("quantizing", f"reusing {output}")
        return output

    def on_progress(progress: QuantizeProgress) -> None:
        if progress.bytes_total:
            report("quantizing", f"{progress.stage} {100 * progress.bytes_done / progress.bytes_total:.0f}%")

    report("quantizing", f"writing {output}")
    return quantize_model(QuantizeRequest(request.model, method, output=output), on_progress, cancel).output


def _peak(snapshots: Sequence[TelemetrySnapshot], name: str) -> float | None:
    values = [snapshot.series_values()[name] for snapshot in snapshots]
    known = [value for value in values if value is not None]
    return max(known) if known else None


def measure_load(
    server: VllmServer,
    request: BenchRequest,
    spec: LoadSpec,
    label: str,
    model_dir: Path,
    kv_capacity_tokens: int | None,
    cancel: threading.Event,
) -> tuple[BenchRun, SweepResult | None, list[TelemetrySnapshot]]:
    """Runs the load (or the sweep) while the telemetry watches memory; returns the run, the sweep, the snapshots."""
    from engine.bench.measure import measure_server
    from engine.bench.sweep import DEFAULT_SWEEP_SLO, concurrency_levels, kv_bound_concurrency, run_sweep
    from engine.telemetry.poller import TelemetryPoller

    def measure(concurrency: int) -> BenchRun:
        return measure_server(
            server.url,
            replace(spec, concurrency=concurrency),
            label=label,
            slo_ms=request.slo_ms,
            percentiles=request.percentiles,
            model_path=model_dir,
            server_argv=server.argv,
            stop_event=cancel,
        )

    snapshots: list[TelemetrySnapshot] = []
    stop = threading.Event()
    sweep = None
    with TelemetryPoller(
        server.url, interval_s=_TELEMETRY_INTERVAL_S, server_pid=server.pid, sample_hardware=True
    ) as poller:
        snapshots.append(poller.poll_once())
        watcher = threading.Thread(target=poller.run, args=(snapshots.append, stop), daemon=True)
        watcher.start()
        try:
            if request.sweep_max_concurrency is None:
                run = measure(spec.concurrency)
            else:
                top = kv_bound_concurrency(
                    kv_capacity_tokens, spec.prompt_tokens + spec.output_tokens, request.sweep_max_concurrency
                )
                sweep = run_sweep(
                    label, measure, concurrency_levels(top), request.slo_ms or DEFAULT_SWEEP_SLO
                )
                knee = [point for point in sweep.points if point.load.spec.concurrency == sweep.knee]
                run = knee[0] if knee else sweep.points[0]
        finally:
            stop.set()
            watcher.join()
    return run, sweep, snapshots


def failure_message(server: VllmServer, result: LoadResult, stage: str) -> str:
    """One line on failed requests, with the server log's diagnosis when it names a cause."""
    from engine.serve.failure_diagnosis import diagnose_failure

    failed = f"{result.failed_requests} of {len(result.records)} {stage} requests failed"
    diagnosis = diagnose_failure(server.read_log(), server.returncode)
    if diagnosis is not None:
        return f"{failed}: {diagnosis.cause}; {diagnosis.fix}"
    first_error = next((record.error for record in result.records if record.error), "unknown error")
    return f"{failed} ({first_error}); see the server log {server.log_path}"


def measure_variant(
    request: BenchRequest,
    variant: VariantResult,
    cancel: threading.Event,
    report: Callable[[str, str], None],
    baseline_quality: QualityResult | None,
) -> tuple[VariantResult, QualityResult | None]:
    """Serves one variant, warms it up, runs the load and the quality check, stops the server."""
    from engine.bench.quality import compare_quality, measure_quality
    from engine.quantize.report import update_quality

    assert variant.model_dir is not None
    report("starting", f"serving {variant.model_dir}")
    server = variant_server(request, variant.model_dir)
    started = time.monotonic()
    try:
        server.start()
        facts = server.wait_healthy(timeout=request.startup_timeout_s, cancel=cancel)
        startup_s = time.monotonic() - started
        model = served_model_name(server.url)
        report("warming up", f"healthy after {startup_s:.0f} s")
        # The warm-up has the load's own shape, so its batch sizes are not first seen inside the timed run.
        warmup_spec = replace(
            request.load,
            model=model,
            requests=max(_WARMUP_REQUESTS, request.load.concurrency),
            duration_s=None,
            num_warmups=0,
            request_rate=math.inf,
        )
        warmup = run_load(server.url, warmup_spec, stop_event=cancel)
        if warmup.failed_requests and not cancel.is_set():
            raise BenchError(failure_message(server, warmup, "warm-up"))
        shape = (
            "a concurrency sweep"
            if request.sweep_max_concurrency
            else f"concurrency {request.load.concurrency}"
        )
        report("load", f"{request.load.requests or 'timed'} requests, {shape}")
        run, sweep, snapshots = measure_load(
            server,
            request,
            replace(request.load, model=model),
            variant.method,
            variant.model_dir,
            facts.kv_cache_tokens,
            cancel,
        )
        result = run.load
        if result.failed_requests and not cancel.is_set():
            raise BenchError(failure_message(server, result, "load"))
        quality = None
        perplexity = agreement = None
        if request.quality_texts and not cancel.is_set():
            report("quality", f"scoring {len(request.quality_texts)} held-out texts")
            quality = measure_quality(server.url, model, request.quality_texts, cancel=cancel)
            comparison = compare_quality(baseline_quality or quality, quality)
            perplexity, agreement = comparison.candidate_perplexity, comparison.top1_agreement
            if baseline_quality is not None:
                # The card quant-tui wrote says the figures are added "when the quality check runs".
                update_quality(variant.model_dir, comparison)
        accuracy = None
        if request.eval_task is not None and not cancel.is_set():
            from engine.bench.task_eval import EvalRequest, run_task_eval

            limit = "" if request.eval_limit is None else f", {request.eval_limit} documents"
            report("task eval", f"lm-eval {request.eval_task.name}{limit}")
            eval_request = EvalRequest(
                request.eval_task, request.eval_limit, server.url, model, tokenizer=variant.model_dir
            )
            accuracy = run_task_eval(eval_request, cancel=cancel)
    finally:
        server.stop()
    rss = _peak(snapshots, "server_rss_bytes")
    gpu = _peak(snapshots, "gpu_memory_used_bytes")
    measured = replace(
        variant,
        startup_s=startup_s,
        kv_cache_tokens=facts.kv_cache_tokens,
        plan_check=server.comparison,
        linear_kernel=facts.linear_kernel,
        weights_memory_bytes=facts.weights_memory_bytes,
        summary=run.summary,
        server_peak_rss_bytes=None if rss is None else int(rss),
        gpu_peak_memory_bytes=None if gpu is None else int(gpu),
        server_generation_tokens=None if run.server is None else run.server.generation_tokens,
        run=replace(run, task_accuracy=accuracy),
        sweep=sweep,
        perplexity=perplexity,
        top1_agreement=agreement,
        task_accuracy=accuracy,
    )
    return measured, quality
