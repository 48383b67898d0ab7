"""Display formatting shared by the screens and the CLI: sizes, rates, durations and paths as short text."""

from __future__ import annotations

import os
from pathlib import Path

from engine.units import GIB, MIB, format_bytes, format_duration, format_gib, format_milliseconds

__all__ = [
    "GIB",
    "MIB",
    "compact_number",
    "gib",
    "home_path",
    "milliseconds",
    "number",
    "percent",
    "seconds",
    "size",
]

# The screens' short names for the engine's one byte/duration formatter (engine.units).
gib = format_gib
size = format_bytes
seconds = format_duration
milliseconds = format_milliseconds


def number(value: float | None, digits: int = 1, suffix: str = "") -> str:
    """A number with ``digits`` decimals and an optional unit; a dash when unknown."""
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def percent(fraction: float | None) -> str:
    """A 0-1 fraction as a whole percentage; a dash when unknown."""
    return "-" if fraction is None else f"{fraction * 100:.0f}%"


def home_path(path: Path | str) -> str:
    """A path as short as it is still exact: relative below the current folder, ``~`` below home."""
    text = str(path)
    cwd = os.getcwd()
    if cwd not in ("", "/") and text.startswith(cwd + os.sep):
        return "." + text[len(cwd) :]
    home = os.path.expanduser("~")
    if home not in ("", "/") and (text == home or text.startswith(home + os.sep)):
        return "~" + text[len(home) :]
    return text


def compact_number(value: float) -> str:
    """A number in at most four characters or so: ``0``, ``2.5``, ``37``, ``412``, ``1.2k``, ``35k``, ``4.1M``."""
    magnitude = abs(value)
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= divisor * 0.9995:
            scaled = value / divisor
            return f"{scaled:.1f}{suffix}" if abs(scaled) < 9.95 else f"{scaled:.0f}{suffix}"
    if magnitude < 9.95 and value != round(value):
        return f"{value:.1f}"
    return f"{value:.0f}"
