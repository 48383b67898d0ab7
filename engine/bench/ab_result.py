"""What an A/B benchmark compares and what it found: the request, progress, each variant's figures, the table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.bench.load_spec import LoadSpec
from engine.bench.metrics import DEFAULT_PERCENTILES, ServeSummary
from engine.errors import QuantTuiError

if TYPE_CHECKING:
    from engine.bench.result import BenchRun
    from engine.bench.sweep import SweepResult
    from engine.bench.task_eval import EvalTask, TaskAccuracy
    from engine.serve.plan_check import PlanVsActual

__all__ = [
    "BASELINE_METHOD",
    "DEFAULT_METHODS",
    "BenchError",
    "BenchProgress",
    "BenchRequest",
    "BenchResult",
    "VariantResult",
    "parse_methods",
]

# "bf16" is the source checkpoint itself, unquantized; the others go through engine.quantize.
BASELINE_METHOD = "bf16"
DEFAULT_METHODS = ("bf16", "int8-w8a8", "w4a16", "fp8")


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
        eval_task: The lm-eval task each variant is scored on (``bench --eval-task``); ``None``: none.
        eval_limit: Documents of ``eval_task`` to evaluate (``None``: all).
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
    eval_task: EvalTask | None = None
    eval_limit: int | None = None


@dataclass(frozen=True)
class BenchProgress:
    """Where the benchmark is.

    Attributes:
        method: The variant being worked on.
        index: Its position in the list (0-based).
        total: How many variants there are.
        stage: ``quantizing``, ``starting``, ``warming up``, ``load``, ``quality``, ``task eval``, ``done`` or
            ``failed``.
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
        summary: vLLM's figures of the load (tokens/s, latency statistics, outcomes).
        server_peak_rss_bytes: Highest resident memory of the server's process tree during the load.
        gpu_peak_memory_bytes: Highest GPU memory in use (all GPUs) during the load; ``None`` without NVML.
        server_generation_tokens: Tokens the server's own counter says it generated during the load.
        perplexity: Perplexity on the held-out texts.
        top1_agreement: Share of positions where its top-1 next token matches the baseline's.
        run: The full result of the load (vLLM keys, server window, reproducibility).
        sweep: The capacity sweep, when one was asked for.
        task_accuracy: lm-eval's figure on ``BenchRequest.eval_task``, when one was asked for.
        plan_check: The variant's server plan against what vLLM reported at start-up (KV tokens,
            concurrency, memory, kernel), as ``quant-tui serve`` shows it.
    """

    method: str
    model_dir: Path | None
    error: str | None = None
    weights_bytes: int | None = None
    startup_s: float | None = None
    kv_cache_tokens: int | None = None
    linear_kernel: str | None = None
    weights_memory_bytes: int | None = None
    summary: ServeSummary | None = None
    server_peak_rss_bytes: int | None = None
    gpu_peak_memory_bytes: int | None = None
    server_generation_tokens: float | None = None
    perplexity: float | None = None
    top1_agreement: float | None = None
    run: BenchRun | None = None
    sweep: SweepResult | None = None
    task_accuracy: TaskAccuracy | None = None
    plan_check: PlanVsActual | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the figures, the run in vLLM's result format and the sweep."""
        data = {
            item.name: getattr(self, item.name)
            for item in fields(self)
            if item.name not in ("run", "sweep", "summary", "task_accuracy", "plan_check")
        }
        data["load"] = None if self.summary is None else self.summary.to_json()
        data["model_dir"] = None if self.model_dir is None else str(self.model_dir)
        data["run"] = None if self.run is None else self.run.to_json()
        data["sweep"] = None if self.sweep is None else self.sweep.to_json()
        data["task_accuracy"] = None if self.task_accuracy is None else self.task_accuracy.to_json()
        data["plan_check"] = None if self.plan_check is None else self.plan_check.to_json()
        return data

    @property
    def tokens_per_s(self) -> float | None:
        """Client-side generated tokens per second under the load."""
        return None if self.summary is None else self.summary.output_throughput

    @property
    def joules_per_token(self) -> float | None:
        """GPU energy per output token over the load (NVML); ``None`` where it is not available."""
        if self.run is None or self.run.energy is None:
            return None
        return self.run.energy.joules_per_token(self.run.summary.total_output_tokens)


@dataclass(frozen=True)
class TradeOffRow:
    """One line of the trade-off table: a variant's figures and its ratios to the baseline (``None``: unknown).

    Attributes:
        method: The quantization method.
        error: Why the variant could not be measured, else ``None``.
        tokens_per_s: Client-side generated tokens per second.
        relative_tokens_per_s: ``tokens_per_s`` over the baseline's.
        weights_bytes: Size of the checkpoint's safetensors files.
        relative_weights: ``weights_bytes`` over the baseline's.
        server_peak_rss_bytes: Highest resident memory of the server's process tree.
        relative_server_memory: ``server_peak_rss_bytes`` over the baseline's.
        gpu_peak_memory_bytes: Highest GPU memory in use (``None`` without NVML).
        median_ttft_ms: Median time to first token.
        median_tpot_ms: Median time per output token.
        perplexity: Perplexity on the held-out texts.
        perplexity_change: Relative change of perplexity against the baseline (0.05: 5 % higher).
        top1_agreement: Share of positions whose top-1 next token matches the baseline's.
        joules_per_output_token: GPU energy per output token (NVML); ``None`` where not available.
        task_accuracy: lm-eval's figure (``acc`` for multiple choice) on the eval task, when one ran.
        task_accuracy_stderr: Its standard error.
    """

    method: str
    error: str | None
    tokens_per_s: float | None
    relative_tokens_per_s: float | None
    weights_bytes: int | None
    relative_weights: float | None
    server_peak_rss_bytes: int | None
    relative_server_memory: float | None
    gpu_peak_memory_bytes: int | None
    median_ttft_ms: float | None
    median_tpot_ms: float | None
    perplexity: float | None
    perplexity_change: float | None
    top1_agreement: float | None
    joules_per_output_token: float | None = None
    task_accuracy: float | None = None
    task_accuracy_stderr: float | None = None


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

    def trade_off(self) -> tuple[TradeOffRow, ...]:
        """The trade-off table: each variant's figures and its ratios to the baseline."""
        base = self.baseline
        return tuple(
            TradeOffRow(
                method=variant.method,
                error=variant.error,
                tokens_per_s=variant.tokens_per_s,
                relative_tokens_per_s=_ratio(variant.tokens_per_s, base.tokens_per_s),
                weights_bytes=variant.weights_bytes,
                relative_weights=_ratio(variant.weights_bytes, base.weights_bytes),
                server_peak_rss_bytes=variant.server_peak_rss_bytes,
                relative_server_memory=_ratio(variant.server_peak_rss_bytes, base.server_peak_rss_bytes),
                gpu_peak_memory_bytes=variant.gpu_peak_memory_bytes,
                median_ttft_ms=None if variant.summary is None else variant.summary.ttft.median_ms,
                median_tpot_ms=None if variant.summary is None else variant.summary.tpot.median_ms,
                perplexity=variant.perplexity,
                perplexity_change=None
                if variant.perplexity is None or not base.perplexity
                else variant.perplexity / base.perplexity - 1.0,
                top1_agreement=variant.top1_agreement,
                joules_per_output_token=variant.joules_per_token,
                task_accuracy=None if variant.task_accuracy is None else variant.task_accuracy.value,
                task_accuracy_stderr=None if variant.task_accuracy is None else variant.task_accuracy.stderr,
            )
            for variant in self.variants
        )

    def rows(self) -> list[dict[str, Any]]:
        """The trade-off table as JSON-ready rows (the keys of :class:`TradeOffRow`)."""
        return [asdict(row) for row in self.trade_off()]

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
    from engine.quantize.request import METHODS

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
