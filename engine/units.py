"""Bytes and durations as short text, in binary units as vLLM logs them: the one formatter of engine, CLI and app."""

from __future__ import annotations

KIB = 2**10
MIB = 2**20
GIB = 2**30
TIB = 2**40

BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
UNKNOWN = "-"


def format_bytes(count: float | None, smallest: str = "B", digits: int = 1) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1: ``1.5 KiB``, ``79.6 GiB``.

    Whole bytes have no decimals (``512 B``); every other unit has ``digits``. A value that would
    round up to 1024 of a unit moves to the next one (``1.0 MiB``, not ``1024.0 KiB``).

    Args:
        count: the number of bytes, or ``None`` when unknown (shown as a dash).
        smallest: the smallest unit to use, e.g. ``"MiB"`` to show ``0.4 MiB`` rather than ``405.8 KiB``.
        digits: decimals above bytes (2 where a plan is compared with what vLLM logged).

    Returns:
        The size as text.
    """
    if count is None:
        return UNKNOWN
    first = BYTE_UNITS.index(smallest)
    value = float(count) / 1024**first
    for unit in BYTE_UNITS[first:-1]:
        shown = round(value) if unit == "B" else round(value, digits)
        if abs(shown) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.{digits}f} {unit}"
        value /= 1024
    return f"{value:.{digits}f} {BYTE_UNITS[-1]}"


def format_gib(count: float | None, digits: int = 1) -> str:
    """Bytes always in GiB (for columns of device memory): ``79.6 GiB``; a dash when unknown."""
    return UNKNOWN if count is None else f"{count / GIB:.{digits}f} GiB"


def format_duration(seconds: float | None) -> str:
    """A duration in the unit that reads best: ``400 ms``, ``4.2 s``, ``3m05s``, ``1h02m``; a dash when unknown."""
    if seconds is None:
        return UNKNOWN
    if round(seconds * 1000) < 1000:
        return f"{seconds * 1000:.0f} ms"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_milliseconds(seconds: float | None, digits: int = 0) -> str:
    """Seconds always in milliseconds (for latency columns): ``75 ms``; a dash when unknown."""
    return UNKNOWN if seconds is None else f"{seconds * 1000:.{digits}f} ms"
