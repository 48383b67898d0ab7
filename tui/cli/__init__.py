"""The ``quant-tui`` command: the app with no subcommand, plain subcommands for scripts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from engine.errors import QuantTuiError
from tui.cli import (
    app_command,
    bench_command,
    monitor_command,
    quantize_command,
    recommend_command,
    serve_command,
)

# Each subcommand module provides ``register(subparsers)`` which adds its parser and sets
# ``func`` to a ``run(args) -> int``; heavy imports stay inside ``run`` so ``--help`` is instant.
SUBCOMMANDS = (recommend_command, quantize_command, serve_command, monitor_command, bench_command)


def build_parser() -> argparse.ArgumentParser:
    """Builds the argument parser for ``quant-tui`` and all its subcommands."""
    parser = argparse.ArgumentParser(
        prog="quant-tui",
        description=(
            "Pick, make and serve a quantized model with vLLM. With no subcommand, opens the guided "
            "terminal app; the subcommands do one step each, for scripts."
        ),
    )
    app_command.add_arguments(parser)
    parser.set_defaults(func=app_command.run)
    subparsers = parser.add_subparsers(title="subcommands", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``quant-tui`` and returns its exit status; bad input is one line on stderr, exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except QuantTuiError as error:
        print(f"quant-tui: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error worth a traceback.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("quant-tui: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
