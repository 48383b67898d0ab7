"""A/B of quantization methods on this machine: tokens/s, latency, memory and quality relative to bf16, in one run.

Usage: ``python benchmarks/ab_methods.py [--model demo] [--methods bf16,int8-w8a8,w4a16,fp8]
[--requests 32] [--concurrency 4] [--json-out results.json]``. Wrap it in
``flock /tmp/quant-tui-heavy.lock`` on shared machines: it quantizes and starts vLLM servers.
It drives the engine (engine.bench.ab_runner) directly; ``quant-tui bench --model M --methods ...``
is the same measurement from the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.bench.ab_runner import DEFAULT_METHODS, BenchProgress, BenchRequest, parse_methods, run_bench
from engine.bench.heldout_text import heldout_samples
from engine.bench.loadgen import LoadSpec
from engine.errors import QuantTuiError
from engine.model.demo import demo_corpus_path
from engine.model.reference import resolve_model


def _number(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def main() -> int:
    """Runs the comparison and prints one line per method (and writes JSON when asked)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    def progress(update: BenchProgress) -> None:
        detail = f": {update.message}" if update.message else ""
        print(f"[{update.index + 1}/{update.total} {update.method}] {update.stage}{detail}", file=sys.stderr)

    try:
        methods = parse_methods(args.methods)
        load = LoadSpec(
            concurrency=args.concurrency,
            prompt_tokens=args.prompt_tokens,
            output_tokens=args.output_tokens,
            requests=args.requests,
        )
        load.check()  # bad input fails before the demo model is built
        request = BenchRequest(
            model=resolve_model(args.model),
            methods=methods,
            load=load,
            quality_texts=tuple(heldout_samples(demo_corpus_path("heldout"))),
            work_dir=args.work_dir,
        )
        result = run_bench(request, on_progress=progress)
    except QuantTuiError as error:
        print(f"ab_methods: error: {error}", file=sys.stderr)
        return 2
    print(f"{result.hardware}; baseline {result.baseline.method}")
    for row, variant in zip(result.rows(), result.variants, strict=True):
        if variant.error is not None or variant.run is None:
            print(f"{row['method']}: failed: {row['error']}")
            continue
        summary = variant.run.summary
        server = variant.run.server
        print(
            f"{row['method']}: {_number(summary.output_throughput)} tok/s "
            f"({_number(row['relative_tokens_per_s'], '×', 2)} of {result.baseline.method}); "
            f"median TTFT {_number(summary.ttft.median_ms, ' ms')}, median TPOT {_number(summary.tpot.median_ms, ' ms', 2)}; "
            f"weights {_number(row['relative_weights'], '×', 2)}; perplexity {_number(row['perplexity'], '', 2)}; "
            f"top-1 agreement {_number(None if row['top1_agreement'] is None else 100 * row['top1_agreement'], '%')}; "
            f"client {summary.total_output_tokens} tokens, server "
            f"{_number(None if server is None else server.generation_tokens, '', 0)}; startup {_number(variant.startup_s, ' s', 0)}"
        )
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
