"""The ``quant-tui`` command: the app with no subcommand, plain subcommands for scripts."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
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


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP to a subcommand: unwinds like Ctrl-C, so children stop and staging folders go."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``quant-tui`` and returns its exit status; bad input is one line on stderr, exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    replaced = {}
    if args.func is not app_command.run and threading.current_thread() is threading.main_thread():
        # `kill` and a closed terminal end a subcommand as cleanly as Ctrl-C (the app has its own quit).
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) == signal.SIG_DFL:
                replaced[signum] = signal.signal(signum, _raise_terminated)
    try:
        return _run(args)
    finally:
        for signum, previous in replaced.items():
            signal.signal(signum, previous)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except QuantTuiError as error:
        print(f"quant-tui: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error worth a traceback.
        sys.stderr.close()
        return 0
    except Terminated as ended:
        print(f"quant-tui: stopped by {signal.Signals(ended.signum).name}", file=sys.stderr)
        return 128 + ended.signum
    except KeyboardInterrupt:
        print("quant-tui: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
