"""Plotext's ANSI text as Textual strips, decoded directly (the dashboard draws ten plots a second; rich's decoder was a third of it)."""

from __future__ import annotations

import re
from functools import lru_cache

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

_SGR = re.compile(r"\x1b\[([0-9;]*)m")


@lru_cache(maxsize=512)
def _style(parameters: str, current: Style) -> Style:
    """``current`` after one SGR sequence: reset, bold, 8-bit and 24-bit colours (what plotext writes)."""
    codes = [int(code) if code else 0 for code in parameters.split(";")]
    style = current
    index = 0
    while index < len(codes):
        code = codes[index]
        if code == 0:
            style = Style.null()
        elif code == 1:
            style += Style(bold=True)
        elif code in (38, 48) and index + 1 < len(codes):
            if codes[index + 1] == 5 and index + 2 < len(codes):
                color = Color.from_ansi(codes[index + 2])
                index += 2
            elif codes[index + 1] == 2 and index + 4 < len(codes):
                color = Color.from_rgb(*codes[index + 2 : index + 5])
                index += 4
            else:
                break
            style += Style(color=color) if code == 38 else Style(bgcolor=color)
        elif code == 39:
            style += Style(color="default")
        elif code == 49:
            style += Style(bgcolor="default")
        elif 30 <= code <= 37 or 90 <= code <= 97:
            style += Style(color=Color.from_ansi(code - 30 if code < 90 else code - 82))
        elif 40 <= code <= 47 or 100 <= code <= 107:
            style += Style(bgcolor=Color.from_ansi(code - 40 if code < 100 else code - 92))
        index += 1
    return style


def ansi_strips(text: str, width: int) -> list[Strip]:
    """One strip per line of ``text``, each exactly ``width`` cells (cropped or padded).

    Args:
        text: Lines with SGR colour sequences, as ``plotext.build()`` returns them.
        width: The cells each strip spans.
    """
    strips = []
    for line in text.split("\n"):
        segments: list[Segment] = []
        style = Style.null()
        position = 0
        for match in _SGR.finditer(line):
            if match.start() > position:
                segments.append(Segment(line[position : match.start()], style))
            style = _style(match.group(1), style)
            position = match.end()
        if position < len(line):
            segments.append(Segment(line[position:], style))
        strips.append(Strip(segments).crop_extend(0, width, None))
    return strips
