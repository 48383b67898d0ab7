"""The ``quant-tui bench`` subcommand: the quantization trade-off table, measured on this machine."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import QuantTuiError

if TYPE_CHECKING:
    from engine.bench.ab_runner import BenchProgress, BenchResult

DEFAULT_METHODS_TEXT = "bf16,int8-w8a8,w4a16,fp8"


def register(subparsers: Any) -> None:
    """Adds the ``bench`` parser."""
    parser = subparsers.add_parser(
        "bench",
        help="compare quantization methods on this machine: tokens/s, memory, quality",
        description=(
            "Quantizes the model with each method, serves each variant in turn with vLLM, sends the "
            "same load and scores the same held-out text, then prints the trade-off table relative to "
            "the first method (the baseline)."
        ),
    )
    parser.add_argument(
        "--model", default="demo", help="model folder, an HF-cache repo id, or 'demo' (default)"
    )
    parser.add_argument(
        "--methods",
        default=DEFAULT_METHODS_TEXT,
        help=f"comma-separated methods, baseline first (default: {DEFAULT_METHODS_TEXT})",
    )
    parser.add_argument("--concurrency", type=int, default=4, metavar="N", help="requests in flight (4)")
    parser.add_argument("--requests", type=int, default=32, metavar="N", help="requests per variant (32)")
    parser.add_argument("--prompt-tokens", type=int, default=64, metavar="N", help="prompt length (64)")
    parser.add_argument(
        "--output-tokens", type=int, default=64, metavar="N", help="tokens generated per request (64)"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, metavar="DIR", help="where quantized variants go"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="quantize again even when a variant folder exists"
    )
    parser.add_argument("--no-quality", action="store_true", help="skip the perplexity / agreement check")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    parser.set_defaults(func=run)


def _format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def _format_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def _format_change(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.2f}%"


def format_table(result: BenchResult) -> str:
    """The trade-off table as aligned text."""
    header = (
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
    lines: list[tuple[str, ...]] = [header]
    notes = []
    for row in result.rows():
        if row["error"]:
            lines.append((row["method"], "failed", *("-",) * (len(header) - 2)))
            notes.append(f"{row['method']}: {row['error']}")
            continue
        memory = row["gpu_peak_memory_bytes"] or row["server_peak_rss_bytes"]
        base_memory = result.baseline.gpu_peak_memory_bytes or result.baseline.server_peak_rss_bytes
        lines.append(
            (
                row["method"],
                "-" if row["tokens_per_s"] is None else f"{row['tokens_per_s']:.1f}",
                _format_ratio(row["relative_tokens_per_s"]),
                _format_bytes(row["weights_bytes"]),
                _format_ratio(row["relative_weights"]),
                _format_bytes(memory),
                _format_ratio(memory / base_memory if memory and base_memory else None),
                "-" if row["median_ttft_ms"] is None else f"{row['median_ttft_ms']:.0f} ms",
                "-" if row["median_tpot_ms"] is None else f"{row['median_tpot_ms']:.1f} ms",
                "-" if row["perplexity"] is None else f"{row['perplexity']:.2f}",
                _format_change(row["perplexity_change"]),
                "-" if row["top1_agreement"] is None else f"{100 * row['top1_agreement']:.1f}%",
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    text = [
        "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    load = result.load
    text.insert(
        0,
        f"{result.hardware}; baseline {result.baseline.method}; load: {load.requests} requests, "
        f"concurrency {load.concurrency}, {load.prompt_tokens} prompt + {load.output_tokens} output tokens",
    )
    text.extend(notes)
    return "\n".join(text)


def _progress_printer(progress: BenchProgress) -> None:
    detail = f": {progress.message}" if progress.message else ""
    print(
        f"[{progress.index + 1}/{progress.total} {progress.method}] {progress.stage}{detail}", file=sys.stderr
    )


def run(args: argparse.Namespace) -> int:
    """Runs the benchmark, printing progress on stderr and the table (or JSON) on stdout."""
    from engine.bench.ab_runner import BenchRequest, parse_methods, run_bench
    from engine.bench.loadgen import LoadSpec
    from engine.model.reference import resolve_model

    methods = parse_methods(args.methods)
    load = LoadSpec(
        concurrency=args.concurrency,
        prompt_tokens=args.prompt_tokens,
        output_tokens=args.output_tokens,
        requests=args.requests,
    )
    load.check()
    model = resolve_model(args.model)
    texts: tuple[str, ...] = () if args.no_quality else _heldout_texts()
    request = BenchRequest(
        model=model,
        methods=methods,
        load=load,
        quality_texts=texts,
        work_dir=args.work_dir,
        reuse=not args.fresh,
    )
    cancel = threading.Event()
    try:
        result = run_bench(request, on_progress=_progress_printer, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        raise
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_table(result))
    if all(variant.error for variant in result.variants):
        raise QuantTuiError(f"no variant could be measured: {result.variants[0].error}")
    return 0


def _heldout_texts() -> tuple[str, ...]:
    """The demo corpus' held-out text, cut into samples (English; fine for any English model)."""
    from engine.bench.heldout_text import heldout_samples
    from engine.model.demo import demo_corpus_path

    return tuple(heldout_samples(demo_corpus_path("heldout")))
