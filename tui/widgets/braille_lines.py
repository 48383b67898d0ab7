"""The braille cells plotext draws for lines and points on a fixed-range canvas, worked out without building a figure.

A plotext build of a dashboard graph costs about 2.5 ms, almost all of it generic figure work
(per-signal list juggling, the whole matrix re-made and turned into ANSI text); the dots themselves
are a few hundred integer steps. The dashboard keeps plotext for the axes (built once per size and
scale) and puts the dots on them with the same arithmetic as plotext 5.2's ``get_matrix_data``,
``get_line`` and ``hd_group``, so the picture is plotext's, cell for cell (the dashboard's tests
compare the two).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from plotext._utility import braille_codes

# Braille dots per cell: 2 across, 4 up.
DOTS_ACROSS = 2
DOTS_UP = 4

Stretch = tuple[Sequence[float], Sequence[float]]
"""One unbroken run of a line: its x values and its y values."""


def _braille_table() -> tuple[str, ...]:
    """The braille character for each 8-bit mask of dots (bit ``2 * (3 - row) + column``, row 0 lowest)."""
    table = []
    for mask in range(256):
        # plotext keys its table by the cell's dots top row first, each row left to right.
        key = tuple((mask >> bit) & 1 for bit in range(8))
        table.append(braille_codes[key])
    return tuple(table)


_CHARACTERS = _braille_table()


def dot_index(value: float, low: float, high: float, dots: int) -> int:
    """The dot (0 at ``low``) a value falls on along an axis of ``dots`` dots, as plotext rounds it."""
    # Same expression, in the same order, as plotext's get_matrix_data: the same float, the same floor.
    return math.floor(round(0.5 + (dots - 1) * (value - low) / (high - low), 8))


def _line_dots(xs: list[int], ys: list[int]) -> list[tuple[int, int]]:
    """Every dot of the straight steps between consecutive points, as plotext's get_lines joins them."""
    dots: list[tuple[int, int]] = []
    for x0, y0, x1, y1 in zip(xs, ys, xs[1:], ys[1:], strict=False):
        steps = max(abs(x1 - x0), abs(y1 - y0)) + 1
        slope_x = (x1 - x0) / (steps - 1) if steps > 1 else 0
        slope_y = (y1 - y0) / (steps - 1) if steps > 1 else 0
        # The last dot of each step is the first of the next: left out, as plotext does.
        dots.extend((int(x0 + i * slope_x), int(y0 + i * slope_y)) for i in range(steps - 1))
    dots.append((xs[-1], ys[-1]))
    return dots


def braille_cells(
    signals: Sequence[tuple[str, Stretch]],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    columns: int,
    rows: int,
) -> dict[tuple[int, int], tuple[str, str]]:
    """The canvas cells the signals light, each with its braille character and colour.

    Args:
        signals: ``(colour, (xs, ys))`` in drawing order; a single point is drawn alone, more are joined.
        x_range: The x axis limits (left, right).
        y_range: The y axis limits (bottom, top).
        columns: The canvas width in cells.
        rows: The canvas height in cells.

    Returns:
        ``{(column, row): (character, colour)}``, row 0 at the bottom; a later signal's cell replaces
        an earlier one's whole (plotext writes each signal's cells over the last).
    """
    cells: dict[tuple[int, int], tuple[str, str]] = {}
    dots_x, dots_y = columns * DOTS_ACROSS, rows * DOTS_UP
    for color, (x_values, y_values) in signals:
        if not x_values:
            continue
        xs = [dot_index(x, *x_range, dots_x) for x in x_values]
        ys = [dot_index(y, *y_range, dots_y) for y in y_values]
        dots = _line_dots(xs, ys) if len(xs) > 1 else list(zip(xs, ys, strict=True))
        masks: dict[tuple[int, int], int] = {}
        for x, y in dots:
            cell = (x // DOTS_ACROSS, y // DOTS_UP)
            masks[cell] = masks.get(cell, 0) | 1 << (2 * (DOTS_UP - 1 - y % DOTS_UP) + x % DOTS_ACROSS)
        for (column, row), mask in masks.items():
            if 0 <= column < columns and 0 <= row < rows:
                cells[column, row] = (_CHARACTERS[mask], color)
    return cells
