"""TimePlot: a time-series graph (plotext) of one :class:`GraphSpec`, with a unit axis, gaps and a time window."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from plotext._utility import colors_to_ansi, no_color
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import RenderResult
from textual.geometry import Region
from textual.strip import Strip
from textual_plotext import PlotextPlot

from tui.format import compact_number
from tui.widgets.ansi_strips import ansi_strips
from tui.widgets.braille_lines import braille_cells
from tui.widgets.graphs import GraphSpec, Unit, Values, plotext_color

if TYPE_CHECKING:
    from typing_extensions import Self

# Below this many rows the plot has no room for x-axis labels; the title says the window instead.
_MIN_ROWS_FOR_TIME_LABELS = 6


def nice_top(highest: float) -> float:
    """The smallest of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10ⁿ at or above ``highest`` (1 when nothing is above zero)."""
    if not highest > 0 or not math.isfinite(highest):
        return 1.0
    power = 10 ** math.floor(math.log10(highest))
    for step in (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0):
        if highest <= step * power * (1 + 1e-9):
            return step * power
    return 10.0 * power


def window_label(seconds: float) -> str:
    """A window length as the x axis writes it: ``30s``, ``2m``, ``1h``."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def axis_suffix(unit: Unit) -> str:
    """The short unit written on the y axis ticks (``ms``, ``%``, ``/s``)."""
    return {" tok/s": "/s", " GiB": "G"}.get(unit.suffix, unit.suffix).strip()


def runs(times: Sequence[float], values: Sequence[float | None]) -> list[tuple[list[float], list[float]]]:
    """The stretches of consecutive known values, so a missing sample is a gap in the line, not a zero."""
    stretches: list[tuple[list[float], list[float]]] = []
    current: tuple[list[float], list[float]] | None = None
    for time_s, value in zip(times, values, strict=False):
        if value is None or not math.isfinite(value):
            current = None
            continue
        if current is None:
            current = ([], [])
            stretches.append(current)
        current[0].append(time_s)
        current[1].append(value)
    return stretches


class TimePlot(PlotextPlot):
    """One graph: its lines over the last ``window_s`` seconds, the latest values in its border title."""

    DEFAULT_CSS = """
    TimePlot {
        width: 1fr;
        height: 1fr;
        min-height: 4;
        border: round $primary 50%;
        border-title-color: $text;
        border-title-align: left;
    }
    """

    # Set while the border title changes (a class default: Textual refreshes during __init__ too).
    _title_only = False

    def __init__(self, spec: GraphSpec, *, id: str | None = None) -> None:
        """Creates an empty graph.

        Args:
            spec: What the graph plots.
            id: The widget id.
        """
        super().__init__(id=id)
        self.spec = spec
        self.border_title = spec.title
        # What was last drawn, so a tick that changes nothing costs nothing.
        self._data_key: object = None
        self._shown_title: tuple[list[str], int] | None = None
        self.redraws = 0
        """How many new pictures of the lines were drawn (each asks Textual for one repaint); a count to watch."""
        self._rendered: tuple[object, list[Strip]] | None = None
        self._stretches: list[tuple[str, list[tuple[list[float], list[float]]]]] = []
        self._window_s = 120.0
        self._top = spec.unit.top or 1.0
        # The columns the lines were last drawn in (the width less the y axis and its labels).
        self._canvas_cells = 0
        # Where the canvas is in the plot (left column, bottom row, columns, rows), as plotext lays it out.
        self._canvas = (0, 0, 0, 0)
        self._axes_cache: _Axes | None = None

    def refresh(
        self, *regions: Region, repaint: bool = True, layout: bool = False, recompose: bool = False
    ) -> Self:
        """Textual's refresh; a new border title repaints only the top border row, not the whole plot."""
        if self._title_only and not regions and not layout and not recompose:
            # Regions are given relative to the content; the border row is above it.
            offset = self.content_offset
            top_row = Region(-offset.x, -offset.y, self.outer_size.width, 1)
            return super().refresh(top_row, repaint=repaint)
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def redraw_period(self, window_s: float) -> float:
        """Seconds for the x axis to move by one braille dot: a redraw sooner moves no line sideways."""
        return window_s / (2 * max(1, self._canvas_cells or self.size.width))

    def show(
        self,
        times: Sequence[float],
        series: Mapping[str, Sequence[float | None]],
        window_s: float,
        latest: Values,
        redraw: bool = True,
    ) -> None:
        """Plots the history that falls in the last ``window_s`` seconds.

        Args:
            times: The wall time of each tick, oldest first.
            series: Every series by name, one value (or ``None``) per tick.
            window_s: How far back the x axis goes.
            latest: This tick's values, for the title.
            redraw: Whether the lines may be redrawn now (else only the title changes).
        """
        room = self.size.width - 4  # the corners and a space either side
        titles = self.spec.titles(latest)
        if (titles, room) != self._shown_title:
            # Compared as text here: Textual keeps the border title as Content, never equal to a str.
            self._shown_title = (titles, room)
            self._title_only = True
            try:
                self.border_title = next(
                    (text for text in titles if Text.from_markup(text).cell_len <= room), titles[-1]
                )
            finally:
                self._title_only = False
        if not redraw:
            return
        now = times[-1] if times else 0.0
        first = next((i for i, time_s in enumerate(times) if time_s >= now - window_s), len(times))
        offsets = [time_s - now for time_s in times[first:]]
        scale = self.spec.unit.scale
        stretches = []
        highest = 0.0
        for line in self.spec.lines:
            values = series.get(line.series, ())[first:]
            shown = [value * scale if value is not None else None for value in values]
            line_runs = runs(offsets, shown)
            for _, ys in line_runs:
                highest = max(highest, *ys)
            stretches.append((plotext_color(line.color), line_runs))
        top = self.spec.unit.top if self.spec.unit.top is not None else nice_top(highest)
        key = (window_s, top, self._picture(stretches, window_s, top))
        if key == self._data_key:
            return  # the same picture at the plot's resolution: an idle server costs no redraw
        self._data_key = key
        self._stretches, self._window_s, self._top = stretches, window_s, top
        self.redraws += 1
        self.refresh()

    def _picture(
        self, stretches: list[tuple[str, list[tuple[list[float], list[float]]]]], window_s: float, top: float
    ) -> tuple[object, ...]:
        """The lines as the braille dots they land on (2 × 4 per cell), finer than the plot can draw."""
        width, height = self.size
        dots_x, dots_y = 2 * max(1, width) / window_s, 4 * max(1, height) / top
        return tuple(
            (
                color,
                tuple(
                    tuple(
                        dict.fromkeys(
                            (round(x * dots_x), round(y * dots_y)) for x, y in zip(xs, ys, strict=True)
                        )
                    )
                    for xs, ys in line_runs
                ),
            )
            for color, line_runs in stretches
        )

    def _draw(self, width: int, height: int, lines: bool = True) -> None:
        """Sets up the plotext figure for this size: the axes, and the lines unless ``lines`` is false."""
        plt = self.plt
        plt.clear_data()
        drawn = any(line_runs for _, line_runs in self._stretches)
        if not drawn:
            # A new figure (a third of a build) only where it matters: the invisible point below
            # takes plotext's next default colour, and clear_figure restarts that count.
            plt.clear_figure()
        else:
            # The lines' colours are read in the theme set when they are added: plotext's own, as in
            # a new figure (every other setting is made again below).
            plt.theme("default")
        plt.plotsize(width, height)
        plt._set_size(width, height)  # as PlotextPlot.render does: plotsize alone misses resizes
        plt.frame(False)
        plt.xaxes(True, False)
        plt.yaxes(True, False)
        if drawn and lines:
            for color, line_runs in self._stretches:
                for xs, ys in line_runs:
                    if len(xs) == 1:
                        plt.scatter(xs, ys, marker="braille", color=color)
                    else:
                        plt.plot(xs, ys, marker="braille", color=color)
        elif drawn:
            # The axes alone: for each stretch, an invisible point off the canvas (right of now, below
            # zero) keeps them drawn, each in its stretch's colour, as a whole plotext build has them.
            for color, line_runs in self._stretches:
                for _ in line_runs:
                    plt.scatter([self._window_s], [-self._top], marker=" ", color=color)
        else:
            # Nothing known in the window: an invisible point keeps the axes drawn.
            plt.scatter([0.0], [0.0], marker=" ")
        window, top = self._window_s, self._top
        plt.xlim(-window, 0)
        plt.ylim(0, top)
        suffix = axis_suffix(self.spec.unit)
        # With nothing to show, no scale is claimed: only the zero line.
        ticks = [0.0] if not drawn else [0.0, top / 2, top] if height >= 4 else [0.0, top]
        labels = [f"{compact_number(tick)}{suffix}" if tick else "0" for tick in ticks]
        plt.yticks(ticks, labels)
        label_cells = max(len(label) for label in labels)
        self._canvas_cells = width - 1 - label_cells
        time_labels = height >= _MIN_ROWS_FOR_TIME_LABELS
        if time_labels:
            plt.xticks([-window, -window / 2, 0], [f"-{window_label(window)}", "", "now"])
        else:
            plt.xticks([], [])
        # Where plotext puts the canvas: right of the labels and the y axis, above the x axis and its labels.
        self._canvas = (label_cells + 1, 1 + time_labels, self._canvas_cells, height - 1 - time_labels)

    def plotext_strips(self) -> list[Strip]:
        """The plot at the current size built wholly by plotext (the reference the dashboard draws like)."""
        width, height = self.size
        self._draw(width, height)
        self.plt.theme(self._get_plotext_theme_name(self.app.theme))
        return ansi_strips(self.plt.build(), width)

    def _axes(self, width: int, height: int) -> _Axes | None:
        """Plotext's empty axes for this size, scale and theme, built once; ``None`` with no lines to draw."""
        theme = self.app.theme
        requested = tuple(color for color, line_runs in self._stretches for _ in line_runs)
        key = (width, height, self._window_s, self._top, theme, requested)
        if self._axes_cache is not None and self._axes_cache.key == key:
            return self._axes_cache
        if not any(line_runs for _, line_runs in self._stretches):
            return None
        self._draw(width, height, lines=False)
        plotext_theme = self._get_plotext_theme_name(theme)
        self.plt.theme(plotext_theme)
        strips = ansi_strips(self.plt.build(), width)
        left, bottom, columns, rows = self._canvas
        if columns < 2 or rows < 2:
            return None  # the off-canvas points could land on a one-cell canvas
        monitor = cast(Any, self.plt).monitor
        colors = [signal_colors[0] for signal_colors in monitor.color]
        self._axes_cache = _Axes(
            key, strips, (left, bottom, columns, rows), monitor.matrix.canvas_color, colors
        )
        return self._axes_cache

    def drawn_strips(self) -> list[Strip]:
        """The plot at the current size as strips, rebuilt only when the data, the size or the theme changed."""
        width, height = self.size
        key = (self.redraws, width, height, self.app.theme)
        if self._rendered is not None and self._rendered[0] == key:
            return self._rendered[1]
        axes = self._axes(width, height)
        strips = (
            self.plotext_strips()
            if axes is None
            else axes.with_lines(self._stretches, self._window_s, self._top)
        )
        self._rendered = (key, strips)
        return strips

    def render_line(self, y: int) -> Strip:
        """One line of the plot (Textual's line API: no text-to-strips conversion on each redraw)."""
        strips = self.drawn_strips()
        return strips[y] if y < len(strips) else Strip.blank(self.size.width)

    def render(self) -> RenderResult:
        """The plot as text (what it draws, for a reader that wants the characters)."""
        return Text("\n".join(strip.text for strip in self.drawn_strips()))


class _Axes:
    """Plotext's axes without lines, as strips, and where its canvas lies, to draw lines on."""

    def __init__(
        self,
        key: object,
        strips: list[Strip],
        canvas: tuple[int, int, int, int],
        canvas_color: object,
        colors: list[str],
    ) -> None:
        """Keeps the axes' strips.

        Args:
            key: What they were built for (size, scale, theme, the colours asked for).
            strips: The axes as plotext draws them with no line.
            canvas: Where the lines go: left column, bottom row, columns, rows.
            canvas_color: The canvas colour in plotext's terms.
            colors: The colour plotext gives each stretch, in drawing order.
        """
        self.key = key
        self.strips = strips
        self.left, self.bottom, self.columns, self.rows = canvas
        self.canvas_color = canvas_color
        self.colors = colors
        # Each canvas row's cells as (character, style, run): a run is one of plotext's colour runs.
        self._cells: dict[int, list[tuple[str, Style, int]]] = {}
        self._dot_styles: dict[str, Style] = {}

    def _row_cells(self, line: int) -> list[tuple[str, Style, int]]:
        cells = self._cells.get(line)
        if cells is None:
            cells = [
                (character, segment.style or Style.null(), run)
                for run, segment in enumerate(self.strips[line])
                for character in segment.text
            ]
            self._cells[line] = cells
        return cells

    def _dot_style(self, color: str) -> Style:
        """The style plotext gives a line's dot: its colour on the canvas, in plotext's own ANSI codes."""
        style = self._dot_styles.get(color)
        if style is None:
            ansi = colors_to_ansi(color, no_color, self.canvas_color)
            style = next(iter(ansi_strips(f"{ansi}x", 1)[0])).style or Style.null()
            self._dot_styles[color] = style
        return style

    def with_lines(
        self, stretches: list[tuple[str, list[tuple[list[float], list[float]]]]], window_s: float, top: float
    ) -> list[Strip]:
        """The axes with the lines drawn on them, cell for cell as plotext draws them."""
        runs = [stretch for _, line_runs in stretches for stretch in line_runs]
        signals = list(zip(self.colors, runs, strict=True))
        cells = braille_cells(signals, (-window_s, 0.0), (0.0, top), self.columns, self.rows)
        by_line: dict[int, dict[int, tuple[str, str]]] = {}
        height = len(self.strips) - 1  # plotext ends its text with a newline: one blank strip more
        for (column, row), cell in cells.items():
            by_line.setdefault(height - 1 - (self.bottom + row), {})[self.left + column] = cell
        strips = list(self.strips)
        for line, dots in by_line.items():
            segments: list[Segment] = []
            text, style, run = "", Style.null(), None
            for column, (character, cell_style, cell_run) in enumerate(self._row_cells(line)):
                dot = dots.get(column)
                # A dot's run is its colour: next to a dot of the same colour it joins, as in plotext's
                # text; one in no colour (plotext ran out of its colours) is the canvas' own.
                this_run: object = ("dot", dot[1]) if dot is not None and dot[1] != no_color else cell_run
                if dot is not None:
                    character, cell_style = dot[0], self._dot_style(dot[1])
                if this_run != run and text:
                    segments.append(Segment(text, style))
                    text = ""
                if not text:
                    style, run = cell_style, this_run
                text += character
            if text:
                segments.append(Segment(text, style))
            strips[line] = Strip(segments, self.strips[line].cell_length)
        return strips
