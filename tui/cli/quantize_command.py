"""The `quant-tui quantize` subcommand: turn a model folder into a compressed-tensors checkpoint vLLM loads."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.quantize.device import DEVICE_CHOICES
from engine.quantize.request import DEFAULT_CALIBRATION_SAMPLES, KV_CACHE_SCHEMES, METHODS
from tui.cli.plan_options import add_model_option

if TYPE_CHECKING:
    from engine.quantize.estimate import CostEstimate
    from engine.quantize.request import QuantizeProgress, QuantizeReport

WORST_LAYERS_PRINTED = 5


def register(subparsers: Any) -> None:
    """Adds the ``quantize`` parser."""
    parser = subparsers.add_parser(
        "quantize",
        help="quantize a model into a checkpoint vLLM serves directly",
        description=(
            "Writes a compressed-tensors checkpoint next to the model (or to --out). fp8, fp8-block, "
            "int8-w8a8, w8a16, w4a16 and nvfp4a16 need no data and stream tensor by tensor, so the model "
            "never has to fit in memory. gptq-w4a16, awq-w4a16, gptq-w8a16 and smoothquant-int8 calibrate "
            "on sample text with llm-compressor, which quant-tui installs into its own environment on "
            "first use (it cannot share vLLM's). --dry-run prints what a run would need first."
        ),
    )
    add_model_option(parser)
    parser.add_argument("--method", required=True, choices=METHODS, help="quantization method")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: <model>-<METHOD>)")
    parser.add_argument(
        "--ignore",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATTERN",
        help="Linear layers to keep in 16-bit: names, globs ('*.down_proj') or 're:<regex>'",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="calibration text (.txt, one sample per paragraph) or JSONL with a 'text' field (calibrated methods)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help=f"calibration samples to read (calibrated methods; default {DEFAULT_CALIBRATION_SAMPLES})",
    )
    parser.add_argument(
        "--kv-cache-scheme",
        choices=KV_CACHE_SCHEMES,
        help="also measure KV cache scales on the calibration text (calibrated methods), so vLLM's "
        "--kv-cache-dtype fp8 uses them instead of 1.0",
    )
    parser.add_argument(
        "--workers", type=int, metavar="N", help="quantizing threads (default: CPU count, ≤8)"
    )
    parser.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="auto",
        help="where the data-free methods compute: cpu, cuda, or auto (cuda when torch sees a CUDA GPU); "
        "the bits written are the same",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print peak memory, disk and time the run would need, and whether it fits; write nothing",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Quantizes with a live progress bar on stderr and prints a summary (or the JSON report)."""
    from engine.model.reference import resolve_model
    from engine.quantize.request import QuantizeRequest
    from engine.quantize.runner import preflight, quantize_model

    source = resolve_model(args.model)
    request = QuantizeRequest(
        source=source,
        method=args.method,
        output=args.out,
        ignore=tuple(args.ignore),
        calibration=args.calibration,
        workers=args.workers,
        kv_cache_scheme=args.kv_cache_scheme,
        calibration_samples=args.samples,
        device=args.device,
    )
    from engine.quantize.estimate import estimate, refuse_if_too_big

    preflight(request)  # header-only checks, so a bad request fails before the bar appears
    cost = estimate(request)
    if args.dry_run:
        if args.json:
            json.dump(cost.as_json(), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            _print_cost(cost)
        refuse_if_too_big(cost)
        return 0
    refuse_if_too_big(cost)
    with _ProgressBar() as bar:
        report = quantize_model(request, on_progress=bar.update)
    if args.json:
        json.dump(report_to_json(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_summary(report)
    return 0


def _print_cost(cost: CostEstimate) -> None:
    from engine.units import format_bytes, format_duration

    print(f"{cost.method}: what the run needs (nothing was written)")
    print(
        f"  peak memory  {format_bytes(cost.peak_ram_bytes)} (available {format_bytes(cost.available_ram_bytes)})"
    )
    if cost.peak_gpu_bytes:
        print(f"  GPU memory   {format_bytes(cost.peak_gpu_bytes)} (torch's allocations)")
    print(f"  disk         {format_bytes(cost.disk_bytes)} (free {format_bytes(cost.free_disk_bytes)})")
    print(f"  time         about {format_duration(cost.seconds)}")
    print(f"  device       {cost.device}")
    print(f"  model        {cost.memory_model}")
    print("  fits" if cost.refusal is None else "  does not fit")


def report_to_json(report: QuantizeReport) -> dict[str, Any]:
    """The report as JSON-ready data: paths as strings, infinite SNRs (exact layers) as null."""
    data = asdict(report)
    data["source"] = str(report.source)
    data["output"] = str(report.output)
    data["ratio"] = round(report.ratio, 4)
    for error in data["layer_errors"]:
        for key in ("relative_error", "snr_db"):
            if not math.isfinite(error[key]):
                error[key] = None
    return data


class _ProgressBar:
    """A rich progress bar on stderr fed by QuantizeProgress events."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(bar_width=24),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("[dim]{task.fields[detail]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task("starting", total=None, detail="")
        self._last_stage = ""

    def __enter__(self) -> _ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, event: QuantizeProgress) -> None:
        """Shows one progress event."""
        if event.message and event.stage != self._last_stage:
            self._progress.console.print(f"[bold]{event.stage}[/]: {event.message}")
        self._last_stage = event.stage
        # Calibrated runs report layers and batches in words rather than tensors and bytes.
        detail = (
            f"{event.tensors_done}/{event.tensors_total} tensors"
            if event.tensors_total
            else event.message[-60:]
        )
        self._progress.update(
            self._task,
            description=event.stage,
            completed=event.bytes_done,
            total=event.bytes_total or None,
            detail=detail,
        )


def _print_summary(report: QuantizeReport) -> None:
    from rich.console import Console
    from rich.table import Table

    from engine.quantize.report import error_summary
    from engine.units import format_bytes

    console = Console()
    console.print(
        f"[bold green]Quantized[/] {report.source.name} with [bold]{report.method}[/] → {report.output}"
    )
    console.print(
        f"  size {format_bytes(report.input_bytes)} → {format_bytes(report.output_bytes)} "
        f"({report.ratio:.2f}× smaller) · {report.seconds:.1f} s · peak memory {format_bytes(report.peak_rss_bytes)}"
    )
    if report.peak_gpu_bytes:
        console.print(f"  on {report.device} · peak GPU memory {format_bytes(report.peak_gpu_bytes)}")
    console.print(
        f"  {report.tensors_quantized} Linear weights quantized, {report.tensors_copied} tensors copied as they were"
    )
    if report.layer_errors:
        console.print(f"  {error_summary(report.layer_errors)}")
        table = Table(title="worst layers (weight reconstruction)", title_justify="left")
        table.add_column("layer")
        table.add_column("relative error", justify="right")
        table.add_column("SNR", justify="right")
        for error in report.layer_errors[:WORST_LAYERS_PRINTED]:
            table.add_row(error.name, f"{error.relative_error:.4f}", f"{error.snr_db:.1f} dB")
        console.print(table)
    kv = f" --kv-cache-dtype {report.kv_cache_scheme}" if report.kv_cache_scheme else ""
    console.print(f"Serve it with: quant-tui serve --model {report.output}{kv}")
