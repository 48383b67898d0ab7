"""`quant-tui` with no subcommand: opens the guided Textual app."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the app's own options to the top-level parser."""
    parser.add_argument(
        "--model",
        default="demo",
        help="model to start with: a folder, a repo id in the local Hugging Face cache, or 'demo' (default)",
    )
    parser.add_argument(
        "--gpu",
        metavar="NAME[xN]",
        help="plan for a catalogued GPU instead of this machine's (e.g. H100x2); see `recommend --list-gpus`",
    )


def run(args: argparse.Namespace) -> int:
    """Runs the app until the user quits; returns its exit status."""
    from tui.app import create_app

    app = create_app(model=args.model, gpu=args.gpu)
    app.run()
    return int(app.return_code or 0)
