"""The planning options ``recommend`` and ``serve`` share (defined once), ``--model``, and the PlanRequest they make."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import QuantTuiError
from engine.plan.plan_request import KV_CACHE_DTYPES, SERVE_DTYPES

if TYPE_CHECKING:
    from engine.plan.plan_request import PlanRequest


@dataclass(frozen=True)
class PlanOption:
    """One planning option: its flag, the PlanRequest field it fills, and how its text is read.

    Values stay text in argparse and are read by :func:`plan_request`, so a bad value is one
    ``quant-tui: error:`` line (argparse's own errors print the whole usage first).
    """

    flag: str
    kind: str  # "count" (a whole number ≥ 1), "fraction" (in (0, 1]) or "choice" (checked by PlanRequest)
    help: str
    metavar: str = "N"
    default: str | None = None
    choices: tuple[str, ...] = ()

    @property
    def field(self) -> str:
        """The PlanRequest field (and argparse dest) the option fills."""
        return self.flag.removeprefix("--").replace("-", "_")


PLAN_OPTIONS: tuple[PlanOption, ...] = (
    PlanOption("--max-model-len", "count", "context length per request (default: model max, ≤32k)"),
    PlanOption(
        "--concurrency",
        "count",
        "sequences of --max-model-len that must fit at once; sizes the KV cache (default 1)",
        default="1",
    ),
    PlanOption(
        "--gpu-memory-utilization",
        "fraction",
        "vLLM's share of each GPU's memory, in (0, 1] (default vLLM's 0.92)",
        metavar="F",
    ),
    PlanOption(
        "--kv-cache-dtype",
        "choice",
        "KV cache dtype (default: auto, or fp8 where it lets more sequences fit)",
        metavar="{" + ",".join(KV_CACHE_DTYPES) + "}",
        choices=KV_CACHE_DTYPES,
    ),
    PlanOption(
        "--dtype",
        "choice",
        "weights and activations dtype; float32 doubles the unquantized weights and an auto KV cache (default auto)",
        metavar="{" + ",".join(SERVE_DTYPES) + "}",
        default="auto",
        choices=SERVE_DTYPES,
    ),
    PlanOption("--max-num-seqs", "count", "vLLM's --max-num-seqs (default per device)"),
    PlanOption(
        "--max-num-batched-tokens",
        "count",
        "vLLM's --max-num-batched-tokens: the profiled batch, so the activation peak (default per device)",
    ),
    PlanOption(
        "--tensor-parallel-size", "count", "GPUs per pipeline stage (default: the smallest that fits)"
    ),
    PlanOption(
        "--cpu-kvcache-gib",
        "count",
        "KV cache space in GiB on the CPU backend (default: what --max-model-len × --concurrency "
        "needs +25%%, within the available RAM)",
    ),
    PlanOption(
        "--nodes",
        "count",
        "boxes of the GPUs joined by Ray: one pipeline stage per box, tensor parallel over each box's "
        "GPUs, as vLLM's multi-node guide sets it (default 1)",
        default="1",
    ),
    PlanOption(
        "--pipeline-parallel-size",
        "count",
        "pipeline stages: with --nodes, over the boxes (default one per box); without, on this one "
        "box, each over --tensor-parallel-size GPUs (no Ray)",
    ),
)


def add_model_option(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--model``: a folder, a ``.gguf`` file, a repo id in the local Hugging Face cache, or ``demo``."""
    where = "model folder, a .gguf file, a repo id in the local Hugging Face cache (a GGUF repo's org/name:Q4_K_M), or 'demo'"
    if required:
        parser.add_argument("--model", required=True, help=where)
    else:
        parser.add_argument("--model", default="demo", help=f"{where} (default)")


def add_plan_options(parser: argparse.ArgumentParser, options: tuple[PlanOption, ...] = PLAN_OPTIONS) -> None:
    """Adds the planning options (:data:`PLAN_OPTIONS`: ``recommend``, ``serve`` and the Plan screen take them all)."""
    for option in options:
        parser.add_argument(
            option.flag,
            dest=option.field,
            default=option.default,
            metavar=option.metavar,
            help=option.help,
        )


def read_option(option: PlanOption, text: str) -> int | float | str:
    """One option's value from its text (the CLI's and the Plan screen's settings alike).

    Raises:
        QuantTuiError: not a number (ranges and choices are checked by PlanRequest itself).
    """
    if option.kind == "choice":
        return text
    try:
        value: float = int(text) if option.kind == "count" else float(text)
    except ValueError:
        kind = "a whole number" if option.kind == "count" else "a fraction such as 0.9"
        raise QuantTuiError(f"{option.flag} expects {kind}, got {text!r}") from None
    return value


def plan_request(
    args: argparse.Namespace, options: tuple[PlanOption, ...] = PLAN_OPTIONS, **more: Any
) -> PlanRequest:
    """The PlanRequest the parsed planning ``options`` ask for (``more`` adds fields such as ``goal``).

    ``VLLM_PP_LAYER_PARTITION``, when set, is read into ``layer_partition``.

    Raises:
        QuantTuiError: a value that is not a number, out of range, or not a dtype vLLM takes; a
            ``VLLM_PP_LAYER_PARTITION`` that is not comma-separated layer counts.
    """
    from engine.plan.plan_request import PlanRequest

    values: dict[str, Any] = {
        option.field: read_option(option, text)
        for option in options
        if (text := getattr(args, option.field)) is not None
    }
    return PlanRequest(**environment_fields(), **values, **more)


def environment_fields() -> dict[str, Any]:
    """The PlanRequest fields that vLLM's own environment variables set (``VLLM_PP_LAYER_PARTITION``).

    Raises:
        QuantTuiError: a ``VLLM_PP_LAYER_PARTITION`` that is not comma-separated layer counts.
    """
    from engine.plan.pipeline_stages import LAYER_PARTITION_ENV, parse_layer_partition

    # vLLM takes the stages' layers from its environment, which the server quant-tui starts inherits.
    partition = os.environ.get(LAYER_PARTITION_ENV)
    return {} if partition is None else {"layer_partition": parse_layer_partition(partition)}
