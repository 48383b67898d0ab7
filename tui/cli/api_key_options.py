"""The ``--api-key`` / ``--api-key-file`` options every server-facing subcommand shares, and the key they give."""

from __future__ import annotations

import argparse
import os
from typing import Any

from engine.serve.server_command import VLLM_API_KEY_ENV


def add_api_key_options(parser: Any, key_help: str | None = None) -> None:
    """Adds ``--api-key-file`` and, when ``key_help`` says what the key is for, ``--api-key``.

    ``--api-key`` defaults to ``$VLLM_API_KEY`` (the variable vLLM's own server and clients read);
    a command without it (``bench``) takes the key from a file or ``$QUANT_TUI_API_KEY`` only.

    Args:
        parser: the subcommand's parser or argument group.
        key_help: the help of ``--api-key`` (its default is appended), or ``None`` for no ``--api-key``.
    """
    if key_help is not None:
        parser.add_argument(
            "--api-key",
            default=os.environ.get(VLLM_API_KEY_ENV),
            help=f"{key_help} (default: ${VLLM_API_KEY_ENV}); `ps` shows it, so prefer --api-key-file",
        )
    others = "--api-key, $QUANT_TUI_API_KEY" if key_help is not None else "$QUANT_TUI_API_KEY"
    parser.add_argument(
        "--api-key-file",
        default=None,
        metavar="FILE",
        help=f"file whose first line is the server's API key (else {others})",
    )


def api_key(args: argparse.Namespace) -> str | None:
    """The key the options give: the file's first line, else ``--api-key``, else ``$QUANT_TUI_API_KEY``."""
    from engine.serve.client import read_api_key

    return read_api_key(args.api_key_file, key=getattr(args, "api_key", None))
