"""Display formatting shared by the screens: sizes, rates, durations and paths as short text."""

from __future__ import annotations

import os
from pathlib import Path

GIB = 2**30
MIB = 2**20


def gib(count: float | None) -> str:
    """Bytes as GiB with one decimal, or a dash when unknown."""
    if count is None:
        return "-"
    return f"{count / GIB:.1f} GiB"


def size(count: float | None) -> str:
    """Bytes in the largest unit that keeps the number readable (KiB to TiB)."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def seconds(value: float | None) -> str:
    """A duration as ``1h02m``, ``3m05s`` or ``4.2 s``; a dash when unknown."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def milliseconds(value: float | None) -> str:
    """Seconds shown as milliseconds; a dash when unknown."""
    return "-" if value is None else f"{value * 1000:.0f} ms"


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
