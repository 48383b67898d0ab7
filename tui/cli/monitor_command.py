"""The `quant-tui monitor` subcommand (being built)."""

from __future__ import annotations

import argparse
from typing import Any

from engine.errors import QuantTuiError


def register(subparsers: Any) -> None:
    """Adds the `monitor` parser."""
    parser = subparsers.add_parser("monitor", help="(being built)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Not built yet."""
    raise QuantTuiError("`quant-tui monitor` is not built yet")
