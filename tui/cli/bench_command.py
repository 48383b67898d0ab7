"""The `quant-tui bench` subcommand (being built)."""

from __future__ import annotations

import argparse
from typing import Any

from engine.errors import QuantTuiError


def register(subparsers: Any) -> None:
    """Adds the `bench` parser."""
    parser = subparsers.add_parser("bench", help="(being built)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Not built yet."""
    raise QuantTuiError("`quant-tui bench` is not built yet")
