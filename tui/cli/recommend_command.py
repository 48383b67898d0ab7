"""The `quant-tui recommend` subcommand: which quantization to use here, and what fits."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.plan.recommender import GOALS, Candidate, Recommendation, as_is_candidate
from tui.cli.plan_options import add_model_option, add_plan_options, plan_request


def register(subparsers: Any) -> None:
    """Adds the ``recommend`` parser."""
    parser = subparsers.add_parser(
        "recommend",
        help="rank quantization methods for a model on this (or a catalogued) GPU",
        description=(
            "Reads the model's config and safetensors headers (no download), detects the GPUs "
            "(or plans for --gpu), and ranks the ways to serve it with vLLM: memory, what fits, "
            "reasons, warnings and the exact vLLM command."
        ),
    )
    add_planning_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--list-gpus", action="store_true", help="list the GPU names --gpu accepts and exit")
    parser.set_defaults(func=run)


def add_planning_arguments(parser: argparse.ArgumentParser) -> None:
    """recommend's options: model, target GPU, goal, and the planning options serve and the Plan screen share."""
    add_model_option(parser)
    parser.add_argument(
        "--gpu",
        metavar="NAME[xN]",
        help="plan for a catalogued GPU instead of this machine's, e.g. H100, A100-80GBx4, L4x2",
    )
    parser.add_argument(
        "--goal", choices=GOALS, default="balanced", help="what to optimise for (default balanced)"
    )
    add_plan_options(parser)


def build_recommendation(args: argparse.Namespace) -> Recommendation:
    """Resolves the model and the target from parsed options and runs the recommender."""
    from engine.hardware.detect import detect_hardware, target_from_snapshot, target_from_spec
    from engine.model.inspect_model import inspect_model
    from engine.model.reference import resolve_model
    from engine.plan.recommender import recommend

    request = plan_request(args, goal=args.goal)
    target = target_from_spec(args.gpu) if args.gpu else target_from_snapshot(detect_hardware())
    model = inspect_model(resolve_model(args.model))
    return recommend(model, target, request)


def run(args: argparse.Namespace) -> int:
    """Prints the ranked recommendation as a table or as JSON."""
    if args.list_gpus:
        return _list_gpus()
    recommendation = build_recommendation(args)
    if args.json:
        json.dump(recommendation_to_json(recommendation), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_table(recommendation)
    return 0


def _list_gpus() -> int:
    from rich.console import Console
    from rich.table import Table

    from engine.hardware.gpu_catalog import CATALOG
    from engine.units import format_gib

    table = Table(title="GPUs --gpu accepts (add xN for N of them)")
    for column in ("name", "architecture", "compute", "memory", "FP8", "also known as"):
        table.add_column(column)
    for gpu in CATALOG:
        table.add_row(
            gpu.name,
            gpu.architecture,
            ".".join(map(str, gpu.compute_capability)),
            format_gib(gpu.memory_bytes, 0),
            "yes" if gpu.fp8_tensor_cores else "no",
            ", ".join(gpu.aliases),
        )
    Console().print(table)
    return 0


def candidate_to_json(candidate: Candidate) -> dict[str, Any]:
    """One candidate in the documented JSON shape, with the memory breakdown added."""
    import dataclasses

    plan = candidate.plan
    return {
        "method": candidate.method,
        "execution": candidate.execution,
        "weight_bytes": candidate.weights.total,
        "kv_cache_dtype": candidate.kv_cache_dtype,
        "kv_cache_bytes_per_token": candidate.kv_cache_bytes_per_token,
        "fits": candidate.fits,
        "tensor_parallel_size": candidate.tensor_parallel_size,
        "pipeline_parallel_size": candidate.pipeline_parallel_size,
        "machines_needed": candidate.machines_needed,
        "max_concurrency": candidate.max_concurrency,
        "kv_cache_tokens": candidate.kv_cache_tokens,
        "memory": {
            "device_bytes": plan.device_memory_bytes,
            "usable_bytes": plan.usable_bytes,
            "weights_bytes_per_device": plan.weights_bytes,
            "activation_bytes": plan.overhead.activations,
            "runtime_bytes": plan.overhead.runtime,
            "kv_cache_bytes": plan.kv_budget_bytes,
            "gpu": dataclasses.asdict(plan.gpu_memory) if plan.gpu_memory is not None else None,
        },
        "model_dir": candidate.model_dir,
        "needs_quantization": candidate.needs_quantization,
        "quantize_refusal": candidate.quantize_refusal,
        "vllm_args": list(candidate.vllm_args),
        "env": dict(candidate.env),
        "command": candidate.server.command_line(),
        "cluster_steps": [{"where": step.where, "command": step.command} for step in candidate.cluster_steps],
        "prediction": _prediction_json(candidate),
        "reasons": list(candidate.reasons),
        "warnings": list(candidate.warnings),
        "trade_off": candidate.trade_off,
    }


def _prediction_json(candidate: Candidate) -> dict[str, Any] | None:
    import dataclasses

    prediction = candidate.server.prediction
    return dataclasses.asdict(prediction) if prediction is not None else None


def recommendation_to_json(recommendation: Recommendation) -> dict[str, Any]:
    """The whole recommendation as the JSON object ``recommend --json`` prints."""
    target, model = recommendation.hardware, recommendation.model
    cc = target.compute_capability
    return {
        "hardware": {
            "kind": target.kind,
            "name": target.name,
            "count": target.count,
            "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
            "memory_bytes": target.memory_bytes,
            "source": target.source,
        },
        "model": {
            "path": str(model.path),
            "architecture": model.architecture,
            "params": model.params,
            "params_source": model.params_source,
            "num_layers": model.num_layers,
            "num_kv_heads": model.num_kv_heads,
            "attention": model.attention_summary,
            "head_dim": model.head_dim,
            "max_context": model.max_context,
            "quantization": model.quantization.method if model.quantization else None,
        },
        "max_model_len": recommendation.max_model_len,
        "concurrency": recommendation.request.concurrency,
        "goal": recommendation.request.goal,
        "nodes": recommendation.request.nodes,
        "notes": list(recommendation.notes),
        "candidates": [candidate_to_json(candidate) for candidate in recommendation.candidates],
    }


def concurrency_text(value: float) -> str:
    """Whole sequences that fit ("3840", not "3840.0"); one decimal below 10, where a fraction matters.

    Rounded down: vLLM admits whole requests only, so 36739.9 is 36739 of them.
    """
    if value >= 10 or float(value).is_integer():
        return str(int(value))
    return f"{int(value * 10) / 10:.1f}"


def _print_table(recommendation: Recommendation) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from engine.model.inspect_model import human_params
    from engine.units import format_gib

    console = Console()
    target, model = recommendation.hardware, recommendation.model
    cc = target.compute_capability
    where = f"{target.count}× {target.name}" if target.kind == "gpu" else f"CPU: {target.name}"
    if recommendation.request.nodes > 1:
        where = f"{recommendation.request.nodes} boxes of {where}"
    console.print(
        f"[bold]{model.name}[/] ({model.architecture}, {human_params(model.params)} params, "
        f"{model.attention_summary})  on  [bold]{where}[/]"
        + (f" (compute {cc[0]}.{cc[1]}, {format_gib(target.memory_bytes, 0)} each)" if cc else "")
    )
    console.print(
        f"context {recommendation.max_model_len} tokens × {recommendation.request.concurrency} "
        f"concurrent, goal: {recommendation.request.goal}"
    )
    for note in recommendation.notes:
        console.print(f"[yellow]note:[/] {note}")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("#", "method", "runs as", "weights", "KV/tok", "KV", "GPUs", "conc.", "fits"):
        numeric = column in {"#", "weights", "KV/tok", "GPUs", "conc."}
        table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    for index, candidate in enumerate(recommendation.candidates, start=1):
        table.add_row(
            str(index),
            candidate.method,
            candidate.execution,
            f"{candidate.weights.total / 1024**3:.1f}G",
            f"{candidate.kv_cache_bytes_per_token / 1024:.0f}K",
            candidate.kv_cache_dtype,
            str(candidate.tensor_parallel_size * candidate.pipeline_parallel_size),
            concurrency_text(candidate.max_concurrency),
            "[green]yes[/]" if candidate.fits else "[red]no[/]",
        )
    console.print(table)
    best = recommendation.best
    console.print(f"[bold]Recommended: {best.method}[/] — {best.trade_off}")
    for reason in best.reasons:
        console.print(f"  • {reason}")
    for warning in best.warnings:
        console.print(f"  [yellow]![/] {warning}")
    if make_command := best.quantize_command(str(model.path)):
        console.print(f"  quantize: {make_command}", soft_wrap=True, markup=False, highlight=False)
    if best.cluster_steps:
        console.print(
            f"  {recommendation.request.nodes} boxes joined by Ray, as vLLM's multi-node guide starts them:"
        )
        for step in best.cluster_steps:
            console.print(f"    [{step.where}] {step.command}", soft_wrap=True, markup=False, highlight=False)
    else:
        console.print(
            f"  serve:    {best.server.command_line()}", soft_wrap=True, markup=False, highlight=False
        )
    as_is = as_is_candidate(recommendation)
    if best.needs_quantization and as_is is not None:
        console.print(
            f"  as it is ({as_is.method}, what `quant-tui serve --model` starts): {as_is.server.command_line()}",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
