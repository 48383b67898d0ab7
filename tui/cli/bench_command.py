"""The ``quant-tui bench`` subcommand: measure a running server as ``vllm bench serve`` does, or A/B quantization methods."""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import QuantTuiError
from tui.cli.api_key_options import add_api_key_options, api_key
from tui.cli.bench_report import format_run, format_sweeps, format_table

if TYPE_CHECKING:
    from engine.bench.ab_result import BenchProgress
    from engine.bench.load_spec import LoadSpec
    from engine.bench.result import BenchRun
    from engine.bench.sweep import SweepResult
    from engine.bench.task_eval import EvalTask, TaskAccuracy

DEFAULT_METHODS_TEXT = "bf16,int8-w8a8,w4a16,fp8"
DEFAULT_SWEEP_MAX = 64


def register(subparsers: Any) -> None:
    """Adds the ``bench`` parser."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmark a running server (--url), or compare quantization methods on this machine",
        description=(
            "With --url: measure a running OpenAI-compatible vLLM server, with the definitions and result "
            "keys of `vllm bench serve` (TTFT to the first streamed chunk, TPOT after the first token, ITL "
            "every gap, E2EL; GuideLLM calls vLLM's TPOT 'ITL'). Without: quantize the model with each "
            "method, serve each variant in turn, send the same load, score the same held-out text and "
            "print the trade-off table relative to the first method."
        ),
    )
    target = parser.add_argument_group("what to measure")
    target.add_argument("--url", default=None, metavar="URL", help="a running server; nothing is launched")
    add_api_key_options(target)
    target.add_argument(
        "--model",
        default=None,
        help="model folder, an HF-cache repo id, or 'demo' (the A/B's default); with --url, lm-eval's tokenizer",
    )
    target.add_argument(
        "--methods",
        default=DEFAULT_METHODS_TEXT,
        help=f"comma-separated methods, baseline first (A/B only; default: {DEFAULT_METHODS_TEXT})",
    )
    target.add_argument(
        "--work-dir", type=Path, default=None, metavar="DIR", help="where quantized variants go"
    )
    target.add_argument(
        "--fresh", action="store_true", help="quantize again even when a variant folder exists"
    )
    target.add_argument("--no-quality", action="store_true", help="skip the perplexity / agreement check")
    target.add_argument(
        "--eval-task",
        default=None,
        metavar="TASK",
        help="also score each served model with lm-eval's local-completions: a task YAML file, a shipped task "
        "(quant_tui_demo_fluency) or an lm-eval task name (needs the 'eval' extra)",
    )
    target.add_argument(
        "--eval-limit",
        type=int,
        default=None,
        metavar="N",
        help="evaluate the first N documents of --eval-task",
    )

    load = parser.add_argument_group("load (as vllm bench serve)")
    load.add_argument(
        "--concurrency", "--max-concurrency", type=int, default=4, metavar="N", help="requests in flight (4)"
    )
    load.add_argument(
        "--request-rate",
        type=float,
        default=math.inf,
        metavar="R",
        help="mean requests/s of a Poisson arrival process (default inf: all at once, paced by --concurrency)",
    )
    load.add_argument(
        "--burstiness", type=float, default=1.0, metavar="B", help="gamma shape of arrival gaps (1: Poisson)"
    )
    load.add_argument("--dataset", metavar="FILE", help='JSONL of {"prompt": ...} lines, sent in order')
    load.add_argument(
        "--num-prompts", "--requests", type=int, default=None, metavar="N", help="requests to send (32)"
    )
    load.add_argument("--duration", type=float, default=None, metavar="S", help="send for S seconds instead")
    load.add_argument(
        "--input-len", "--prompt-tokens", type=int, default=64, metavar="N", help="prompt tokens (64)"
    )
    load.add_argument(
        "--output-len", "--output-tokens", type=int, default=64, metavar="N", help="output tokens (64)"
    )
    load.add_argument(
        "--input-range", type=float, default=0.0, metavar="R", help="prompt lengths vary by ±R (0..1)"
    )
    load.add_argument(
        "--output-range", type=float, default=0.0, metavar="R", help="output lengths vary by ±R (0..1)"
    )
    load.add_argument(
        "--ignore-eos",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="generate exactly --output-len tokens (default on)",
    )
    load.add_argument(
        "--num-warmups", type=int, default=None, metavar="N", help="warm-up requests, left out (--url: 0)"
    )
    load.add_argument("--temperature", type=float, default=None, help="sent only when given (as vLLM)")
    load.add_argument("--seed", type=int, default=0, help="seed of prompts, lengths and arrivals (0)")
    load.add_argument("--timeout", type=float, default=120.0, metavar="S", help="per-request timeout (120)")

    report = parser.add_argument_group("figures and results")
    report.add_argument(
        "--slo", default=None, metavar="SPEC", help="goodput SLO in ms, e.g. ttft:500,tpot:50,e2el:5000"
    )
    report.add_argument(
        "--percentiles", default="50,90,95,99", metavar="LIST", help="percentiles to report (50,90,95,99)"
    )
    report.add_argument(
        "--sweep",
        action="store_true",
        help="step concurrency 1,2,4,... and report the highest that meets the SLO (p95; default ttft:500,tpot:50)",
    )
    report.add_argument(
        "--sweep-max",
        type=int,
        default=DEFAULT_SWEEP_MAX,
        metavar="N",
        help="highest concurrency a sweep tries",
    )
    report.add_argument(
        "--server-sample-interval",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds between /metrics scrapes during the run (2; 0: only before and after)",
    )
    report.add_argument("--label", default=None, help="the result's label (--url; default: the model name)")
    report.add_argument("--save-result", type=Path, metavar="FILE", help="write the result JSON")
    report.add_argument(
        "--append-result", action="store_true", help="append one JSON line to --save-result (as vLLM)"
    )
    report.add_argument("--save-detailed", action="store_true", help="keep per-request lists in the JSON")
    report.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    parser.set_defaults(func=run)


def _progress_printer(progress: BenchProgress) -> None:
    detail = f": {progress.message}" if progress.message else ""
    print(
        f"[{progress.index + 1}/{progress.total} {progress.method}] {progress.stage}{detail}", file=sys.stderr
    )


def _percentiles(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise QuantTuiError(f"--percentiles takes numbers like 50,90,99, not {text!r}") from error
    if not values or any(not 0 <= value <= 100 for value in values):
        raise QuantTuiError(f"--percentiles takes numbers from 0 to 100, not {text!r}")
    return values


def load_spec(args: argparse.Namespace, default_warmups: int) -> LoadSpec:
    """The load the options describe, checked."""
    from engine.bench.load_spec import LoadSpec, read_prompt_file

    requests = args.num_prompts
    if requests is None and args.duration is None:
        requests = 32
    spec = LoadSpec(
        concurrency=args.concurrency,
        prompt_tokens=args.input_len,
        output_tokens=args.output_len,
        requests=requests,
        duration_s=args.duration,
        timeout_s=args.timeout,
        ignore_eos=args.ignore_eos,
        seed=args.seed,
        request_rate=args.request_rate,
        burstiness=args.burstiness,
        prompt_range=args.input_range,
        output_range=args.output_range,
        num_warmups=default_warmups if args.num_warmups is None else args.num_warmups,
        temperature=args.temperature,
        prompts=() if args.dataset is None else read_prompt_file(Path(args.dataset)),
    )
    spec.check()
    return spec


def _save(args: argparse.Namespace, data: dict[str, Any]) -> None:
    from engine.bench.result import save_result

    if args.save_result is not None:
        path = save_result(data, args.save_result, append=args.append_result)
        print(f"result saved to {path}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Measures the server (``--url``) or runs the A/B; the result on stdout, progress on stderr."""
    from engine.bench.metrics import parse_slo

    if args.append_result and args.save_result is None:
        raise QuantTuiError("--append-result needs --save-result FILE")
    slo = parse_slo(args.slo)
    percentiles = _percentiles(args.percentiles)
    if args.save_result is not None:
        from engine.bench.result import check_result_path

        check_result_path(args.save_result)  # before the run, not after it
    task = _eval_task(args)
    if args.url is not None:
        return _run_url(args, slo, percentiles, task)
    return _run_ab(args, slo, percentiles, task)


def _eval_task(args: argparse.Namespace) -> EvalTask | None:
    """The lm-eval task asked for, checked before anything is served (lm-eval installed, task known)."""
    if args.eval_limit is not None and args.eval_limit < 1:
        raise QuantTuiError(f"--eval-limit must be at least 1, not {args.eval_limit}")
    if args.eval_task is None:
        if args.eval_limit is not None:
            raise QuantTuiError("--eval-limit needs --eval-task TASK")
        return None
    from engine.bench.task_eval import require_lm_eval, resolve_task

    require_lm_eval()
    return resolve_task(args.eval_task)


def _url_task_accuracy(
    args: argparse.Namespace, task: EvalTask, url: str, model: str, key: str | None, stop: threading.Event
) -> TaskAccuracy:
    """lm-eval against ``--url``, with ``--model`` (else the served folder) as its tokenizer."""
    from engine.bench.task_eval import EvalRequest, local_tokenizer, run_task_eval
    from engine.model.reference import resolve_model

    tokenizer = local_tokenizer(model, None if args.model is None else resolve_model(args.model))
    print(f"lm-eval: task {task.name} against {url}", file=sys.stderr)
    return run_task_eval(EvalRequest(task, args.eval_limit, url, model, tokenizer, key), cancel=stop)


def _run_url(
    args: argparse.Namespace, slo: dict[str, float], percentiles: tuple[float, ...], task: EvalTask | None
) -> int:
    from dataclasses import replace

    from engine.bench.measure import measure_server
    from engine.bench.sweep import DEFAULT_SWEEP_SLO, concurrency_levels, kv_bound_concurrency, run_sweep
    from engine.serve.client import base_url, served_model_name

    key = api_key(args)
    url = base_url(args.url)
    spec = load_spec(args, default_warmups=0)
    spec = replace(spec, model=served_model_name(url, key))
    stop = threading.Event()

    def measure(concurrency: int) -> BenchRun:
        return measure_server(
            url,
            replace(spec, concurrency=concurrency),
            key,
            label=args.label,
            slo_ms=slo,
            percentiles=percentiles,
            save_detailed=args.save_detailed,
            sample_interval_s=args.server_sample_interval,
            stop_event=stop,
        )

    try:
        if not args.sweep:
            result = measure(spec.concurrency)
            if task is not None and result.summary.completed:
                result = replace(
                    result, task_accuracy=_url_task_accuracy(args, task, url, str(spec.model), key, stop)
                )
            data = result.to_json()
            print(json.dumps(data, indent=2) if args.json else format_run(result))
            _save(args, data)
            return 0 if result.summary.completed else _all_failed(result)
        top = kv_bound_concurrency(
            _kv_capacity(url, key), spec.prompt_tokens + spec.output_tokens, args.sweep_max
        )
        levels = concurrency_levels(top)
        sweep = run_sweep(args.label or str(spec.model), measure, levels, slo or DEFAULT_SWEEP_SLO)
        accuracy = None if task is None else _url_task_accuracy(args, task, url, str(spec.model), key, stop)
    except KeyboardInterrupt:
        stop.set()
        raise
    return _print_sweeps(args, [sweep], accuracy)


def _kv_capacity(url: str, key: str | None) -> int | None:
    """The server's KV cache capacity in tokens, from one ``/metrics`` poll (``None`` when it does not say)."""
    from engine.telemetry.poller import TelemetryPoller

    poller = TelemetryPoller(url, api_key=key, timeout_s=10.0, sample_hardware=False)
    try:
        metrics = poller.poll_once().metrics
    finally:
        poller.close()
    return None if metrics is None else metrics.kv_cache_capacity_tokens


def _all_failed(run: BenchRun) -> int:
    reasons = run.summary.failure_reasons
    raise QuantTuiError(f"no request completed: {reasons[0][0] if reasons else 'unknown error'}")


def _print_sweeps(args: argparse.Namespace, sweeps: list[SweepResult], accuracy: TaskAccuracy | None) -> int:
    from engine.bench.sweep import capacity_line, plot_sweeps

    line = capacity_line(sweeps)
    charts = plot_sweeps(sweeps)
    data: dict[str, Any] = {
        "sweeps": [sweep.to_json() for sweep in sweeps],
        "capacity": line,
        "plots": charts,
    }
    if accuracy is not None:
        data["task_accuracy"] = accuracy.to_json()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(charts)
        print(format_sweeps(sweeps))
        print(line)
        if accuracy is not None:
            print(f"task accuracy ({accuracy.task}, {accuracy.samples} documents): {accuracy.text()}")
    _save(args, data)
    return 0


def _run_ab(
    args: argparse.Namespace, slo: dict[str, float], percentiles: tuple[float, ...], task: EvalTask | None
) -> int:
    from engine.bench.ab_result import BenchRequest, parse_methods
    from engine.bench.ab_runner import run_bench
    from engine.model.reference import resolve_model

    methods = parse_methods(args.methods)
    spec = load_spec(args, default_warmups=0)
    model = resolve_model(args.model or "demo")
    texts: tuple[str, ...] = () if args.no_quality else heldout_texts()
    request = BenchRequest(
        model=model,
        methods=methods,
        load=spec,
        quality_texts=texts,
        work_dir=args.work_dir,
        reuse=not args.fresh,
        slo_ms=slo,
        percentiles=percentiles,
        sweep_max_concurrency=args.sweep_max if args.sweep else None,
        eval_task=task,
        eval_limit=args.eval_limit,
    )
    cancel = threading.Event()
    try:
        result = run_bench(request, on_progress=_progress_printer, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        raise
    data = result.to_dict()
    sweeps = [variant.sweep for variant in result.variants if variant.sweep is not None]
    if sweeps:
        from engine.bench.sweep import capacity_line, plot_sweeps

        data["capacity"] = capacity_line(sweeps)
        data["plots"] = plot_sweeps(sweeps)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(format_table(result))
        if sweeps:
            print(data["plots"])
            print(data["capacity"])
    _save(args, data)
    if all(variant.error for variant in result.variants):
        raise QuantTuiError(f"no variant could be measured: {result.variants[0].error}")
    return 0


def heldout_texts() -> tuple[str, ...]:
    """The demo corpus' held-out text, cut into samples (English; fine for any English model)."""
    from engine.bench.heldout_text import heldout_samples
    from engine.model.demo import demo_corpus_path

    return tuple(heldout_samples(demo_corpus_path("heldout")))
