"""`quant-tui` with no subcommand: opens the guided Textual app."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tui.app import QuantTuiApp


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the app's own options to the top-level parser."""
    parser.add_argument(
        "--model",
        default="demo",
        help="model to start with: a folder, a .gguf file, a repo id in the local Hugging Face cache, or 'demo' (default)",
    )
    parser.add_argument(
        "--gpu",
        metavar="NAME[xN]",
        help="plan for a catalogued GPU instead of this machine's (e.g. H100x2); see `recommend --list-gpus`",
    )


def build_app(args: argparse.Namespace) -> QuantTuiApp:
    """The app ``quant-tui`` opens for ``args``, planning with what vLLM's environment sets, as ``recommend`` does.

    Raises:
        QuantTuiError: a vLLM environment variable quant-tui plans with holds a value vLLM refuses.
    """
    from engine.plan.plan_request import PlanRequest
    from tui.app import create_app
    from tui.cli.plan_options import environment_fields

    fields = environment_fields()
    return create_app(model=args.model, gpu=args.gpu, request=PlanRequest(**fields) if fields else None)


def run(args: argparse.Namespace) -> int:
    """Runs the app until the user quits; returns its exit status."""
    app = build_app(args)
    app.run()
    return int(app.return_code or 0)
