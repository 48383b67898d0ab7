"""What ``quant-tui bench`` prints: the A/B trade-off table, vLLM's result block and the sweep curve."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.units import format_bytes
from tui.cli.output import plain, table
from tui.format import number

if TYPE_CHECKING:
    from engine.bench.ab_result import BenchResult
    from engine.bench.result import BenchRun
    from engine.bench.sweep import SweepResult

TRADE_OFF_COLUMNS = (
    "method",
    "tok/s",
    "rel tok/s",
    "weights",
    "rel weights",
    "server mem",
    "rel mem",
    "TTFT p50",
    "TPOT p50",
    "ppl",
    "ppl change",
    "top-1 agree",
)
# vLLM's result block: 50 columns, labels padded to 40 (vllm/benchmarks/serve.py).
VLLM_BLOCK_WIDTH = 50
VLLM_LABEL_WIDTH = 40


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def _change(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.2f}%"


def format_table(result: BenchResult) -> str:
    """The trade-off table relative to the first method, under a line naming the hardware and the load."""
    rows = []
    notes = []
    base_memory = result.baseline.gpu_peak_memory_bytes or result.baseline.server_peak_rss_bytes
    for row in result.trade_off():
        if row.error:
            rows.append((row.method, "failed", *("-",) * (len(TRADE_OFF_COLUMNS) - 2)))
            notes.append(f"{row.method}: {row.error}")
            continue
        memory = row.gpu_peak_memory_bytes or row.server_peak_rss_bytes
        agreement = row.top1_agreement
        rows.append(
            (
                row.method,
                number(row.tokens_per_s),
                _ratio(row.relative_tokens_per_s),
                format_bytes(row.weights_bytes),
                _ratio(row.relative_weights),
                format_bytes(memory),
                _ratio(memory / base_memory if memory and base_memory else None),
                number(row.median_ttft_ms, 0, " ms"),
                number(row.median_tpot_ms, 1, " ms"),
                number(row.perplexity, 2),
                _change(row.perplexity_change),
                number(None if agreement is None else 100 * agreement, 1, "%"),
            )
        )
    columns: tuple[str, ...] = TRADE_OFF_COLUMNS
    accuracies = [variant.task_accuracy for variant in result.variants]
    measured = [accuracy for accuracy in accuracies if accuracy is not None]
    if measured:
        # One column for the lm-eval task, e.g. "quant_tui_demo_fluency acc (20)": value ± stderr per method.
        columns = (*columns, measured[0].header())
        rows = [
            (*row, "-" if accuracy is None or row[1] == "failed" else accuracy.cell())
            for row, accuracy in zip(rows, accuracies, strict=True)
        ]
    load = result.load
    heading = (
        f"{result.hardware}; baseline {result.baseline.method}; load: {load.requests} requests, "
        f"concurrency {load.concurrency}, {load.prompt_tokens} prompt + {load.output_tokens} output tokens"
    )
    return "\n".join([heading, plain(table(columns, rows)), *notes, *_plan_lines(result)])


def _plan_lines(result: BenchResult) -> list[str]:
    """Each variant's server plan against what vLLM reported at its start-up, as ``serve`` prints it."""
    from engine.serve.plan_check import comparison_lines

    lines = []
    for variant in result.variants:
        if variant.plan_check is not None:
            verdict = "exact" if variant.plan_check.exact else "differs"
            lines.append(f"{variant.method}: plan vs. vLLM at start-up ({verdict})")
            lines.extend(f"  {line}" for line in comparison_lines(variant.plan_check))
    return lines


def _vllm_line(name: str, value: float | int | None, digits: int = 2) -> str:
    shown = "-" if value is None else (f"{value}" if isinstance(value, int) else f"{value:.{digits}f}")
    return f"{name:<{VLLM_LABEL_WIDTH}} {shown:<10}"


def _rule(title: str, fill: str) -> str:
    return f"{title:{fill}^{VLLM_BLOCK_WIDTH}}"


def _rounded(value: float | None) -> int | None:
    return None if value is None else round(value)


def format_run(run: BenchRun) -> str:
    """The result block exactly as ``vllm bench serve`` lays it out (scripts that read vLLM's read it), then
    the server's own figures of the same window."""
    summary = run.summary
    lines = [
        _rule(" Serving Benchmark Result ", "="),
        _vllm_line("Successful requests:", summary.completed),
        _vllm_line("Failed requests:", summary.failed),
        _vllm_line("Maximum request concurrency:", run.load.spec.concurrency),
        _vllm_line("Benchmark duration (s):", summary.duration),
        _vllm_line("Total input tokens:", summary.total_input_tokens),
        _vllm_line("Total generated tokens:", summary.total_output_tokens),
        _vllm_line("Request throughput (req/s):", summary.request_throughput),
    ]
    if summary.request_goodput is not None:
        lines.append(_vllm_line("Request goodput (req/s):", summary.request_goodput))
    lines += [
        _vllm_line("Output token throughput (tok/s):", summary.output_throughput),
        _vllm_line("Peak output token throughput (tok/s):", summary.max_output_tokens_per_s),
        _vllm_line("Total token throughput (tok/s):", summary.total_token_throughput),
    ]
    for name, title in (
        ("ttft", "Time to First Token"),
        ("tpot", "Time per Output Token (excl. 1st token)"),
        ("itl", "Inter-token Latency"),
        ("e2el", "End-to-end Latency"),
    ):
        stats = summary.stats(name)
        lines.append(_rule(title, "-"))
        label = name.upper()
        lines.append(_vllm_line(f"Mean {label} (ms):", stats.mean_ms))
        lines.append(_vllm_line(f"Median {label} (ms):", stats.median_ms))
        for p, value in stats.percentiles_ms:
            lines.append(_vllm_line(f"P{p:g} {label} (ms):", value))
    for reason, count in summary.failure_reasons:
        lines.append(f"failed ×{count}: {reason}")
    lines += _server_lines(run)
    accuracy = run.task_accuracy
    if accuracy is not None:
        lines.append(_rule(" lm-eval, same server ", "-"))
        lines.append(
            f"{f'{accuracy.task} ({accuracy.samples} documents):':<{VLLM_LABEL_WIDTH}} {accuracy.text()}"
        )
    lines.append("=" * VLLM_BLOCK_WIDTH)
    return "\n".join(lines)


def _server_lines(run: BenchRun) -> list[str]:
    window = run.server
    if window is None:
        return []
    lines = [_rule(" Server /metrics, same window ", "-")]
    if window.error and window.request_success is None:
        return [*lines, f"not read: {window.error}"]
    lines.append(_vllm_line("Requests finished (server):", _rounded(window.request_success)))
    lines.append(_vllm_line("Generated tokens (server):", _rounded(window.generation_tokens)))
    for title, histogram in (("TTFT", window.ttft), ("ITL", window.itl), ("E2EL", window.e2el)):
        if histogram is not None:
            shown = f"{number(histogram.mean_ms, 2)} / {number(histogram.p95_ms, 2)}"
            lines.append(f"{f'Server mean / p95 {title} (ms):':<{VLLM_LABEL_WIDTH}} {shown}")
    lines.append(_vllm_line("Server mean queue time (ms):", window.queue_time_mean_ms))
    lines.append(_vllm_line("Preemptions:", _rounded(window.preemptions)))
    peak = window.kv_cache_usage_peak
    lines.append(_vllm_line("Peak KV cache usage (%):", None if peak is None else 100 * peak))
    if window.prefix_cache_queries:
        lines.append(_vllm_line("Prefix cache hits (tokens):", _rounded(window.prefix_cache_hits)))
    return lines


def format_sweeps(sweeps: list[SweepResult]) -> str:
    """Each sweep's curve as a table: throughput and p95 latencies per concurrency, and the SLO verdict."""
    from engine.bench.sweep import SWEEP_PERCENTILE, meets_slo

    p = f"p{SWEEP_PERCENTILE:g}"
    columns = ("label", "concurrency", "tok/s", f"{p} TTFT", f"{p} TPOT", "SLO")
    rows = [
        (
            sweep.label,
            str(point.load.spec.concurrency),
            number(point.summary.output_throughput, 2),
            number(point.summary.ttft.percentile(SWEEP_PERCENTILE), 2, " ms"),
            number(point.summary.tpot.percentile(SWEEP_PERCENTILE), 2, " ms"),
            "meets" if meets_slo(point, sweep.slo_ms) else "misses",
        )
        for sweep in sweeps
        for point in sweep.points
    ]
    return plain(table(columns, rows))
