"""The ``quant-tui`` command: the app with no subcommand, plain subcommands for scripts."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from engine.errors import QuantTuiError
from tui.cli import app_command

# Each subcommand module provides ``register(subparsers)`` which adds its parser and sets
# ``func`` to a ``run(args) -> int``; heavy imports stay inside ``run`` so ``--help`` is instant.
# They are imported by name when the full parser is built: opening the app (no subcommand) parses
# with the app's options alone, so its first frame does not wait for the planner, the quantizer's
# option tables or the server command (about 0.1 s of imports).
SUBCOMMANDS = (
    "tui.cli.recommend_command",
    "tui.cli.quantize_command",
    "tui.cli.serve_command",
    "tui.cli.monitor_command",
    "tui.cli.bench_command",
)


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
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


class _NotTheAppAlone(Exception):
    """The command line is not the app's options alone (a subcommand, ``--help``, a mistake)."""


class _AppOnlyParser(argparse.ArgumentParser):
    """The top-level parser without subcommands; it raises instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise _NotTheAppAlone(message)


def _app_only_args(argv: Sequence[str] | None) -> argparse.Namespace | None:
    """The parsed options when ``argv`` opens the app with nothing else, else ``None``.

    Anything else (a subcommand, ``-h``, a bad option) goes through the full parser, so its usage,
    help and error messages are the full command's.
    """
    parser = _AppOnlyParser(prog="quant-tui", add_help=False)
    app_command.add_arguments(parser)
    try:
        args, rest = parser.parse_known_args(argv)
    except _NotTheAppAlone:
        return None
    if rest:
        return None
    args.func = app_command.run
    return args


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP to a subcommand: unwinds like Ctrl-C, so children stop and staging folders go."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``quant-tui`` and returns its exit status; bad input is one line on stderr, exit 2."""
    args = _app_only_args(argv)
    if args is None:
        args = build_parser().parse_args(argv)
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
