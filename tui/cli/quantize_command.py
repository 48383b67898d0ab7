"""The `quant-tui quantize` subcommand (being built)."""

from __future__ import annotations

import argparse
from typing import Any

from engine.errors import QuantTuiError


def register(subparsers: Any) -> None:
    """Adds the `quantize` parser."""
    parser = subparsers.add_parser("quantize", help="(being built)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Not built yet."""
    raise QuantTuiError("`quant-tui quantize` is not built yet")
