"""QuantTuiError: one line for the terminal, its cause and fix apart for the error dialog."""

from __future__ import annotations

import pytest

from engine.errors import QuantTuiError


@pytest.mark.parametrize(
    ("args", "cause", "fix", "line"),
    [
        (
            ("output folder x exists; remove it",),
            "output folder x exists",
            "remove it",
            "output folder x exists; remove it",
        ),
        (("no GPU found",), "no GPU found", "", "no GPU found"),
        (("a; b; c",), "a", "b; c", "a; b; c"),
        (
            ("vLLM did not start: port 80 is taken", "pass --port"),
            "vLLM did not start: port 80 is taken",
            "pass --port",
            "vLLM did not start: port 80 is taken; pass --port",
        ),
        (("x; y", "z"), "x; y", "z", "x; y; z"),
    ],
)
def test_cause_fix_and_line(args: tuple[str, ...], cause: str, fix: str, line: str) -> None:
    error = QuantTuiError(*args)
    assert (error.cause, error.fix, str(error)) == (cause, fix, line)
