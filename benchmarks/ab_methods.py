"""A/B of quantization methods on this machine: tokens/s, latency, memory and quality relative to bf16, in one run.

Usage: ``python benchmarks/ab_methods.py [--model demo] [--methods bf16,int8-w8a8,w4a16,fp8]
[--requests 32] [--concurrency 4] [--eval-task quant_tui_demo_fluency [--eval-limit N]] [--json-out results.json]``. Wrap it in
``flock /tmp/quant-tui-heavy.lock`` on shared machines: it quantizes and starts vLLM servers.
It drives the engine's A/B (``engine.bench.ab_runner.run_bench``) and prints the CLI's own table
(``tui.cli.bench_command.format_table``), so its figures are those of ``quant-tui bench --model M
--methods ...``; it adds one line per method comparing the client's token count with the server's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.bench.ab_result import DEFAULT_METHODS, BenchProgress, BenchRequest, parse_methods
from engine.bench.ab_runner import run_bench
from engine.bench.load_spec import LoadSpec
from engine.errors import QuantTuiError
from engine.model.reference import resolve_model
from tui.cli.bench_command import format_table, heldout_texts


def main() -> int:
    """Runs the comparison, prints the trade-off table (and writes JSON when asked)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument(
        "--eval-task", default=None, help="lm-eval task for each variant (as bench --eval-task)"
    )
    parser.add_argument("--eval-limit", type=int, default=None)
    args = parser.parse_args()

    def progress(update: BenchProgress) -> None:
        detail = f": {update.message}" if update.message else ""
        print(f"[{update.index + 1}/{update.total} {update.method}] {update.stage}{detail}", file=sys.stderr)

    try:
        load = LoadSpec(
            concurrency=args.concurrency,
            prompt_tokens=args.prompt_tokens,
            output_tokens=args.output_tokens,
            requests=args.requests,
        )
        load.check()  # bad input fails before the demo model is built
        task = None
        if args.eval_task is not None:
            from engine.bench.task_eval import require_lm_eval, resolve_task

            require_lm_eval()
            task = resolve_task(args.eval_task)
        request = BenchRequest(
            model=resolve_model(args.model),
            methods=parse_methods(args.methods),
            load=load,
            quality_texts=heldout_texts(),
            work_dir=args.work_dir,
            eval_task=task,
            eval_limit=args.eval_limit,
        )
        result = run_bench(request, on_progress=progress)
    except QuantTuiError as error:
        print(f"ab_methods: error: {error}", file=sys.stderr)
        return 2
    print(format_table(result))
    for variant in result.variants:
        if variant.summary is not None:
            server = variant.server_generation_tokens
            print(
                f"{variant.method}: client counted {variant.summary.total_output_tokens} output tokens, "
                f"the server {'-' if server is None else f'{server:.0f}'}"
            )
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
