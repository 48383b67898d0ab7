"""MemoryBar: a stacked horizontal bar of memory parts against a capacity, with a legend."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.format import size

FREE_CHAR = "·"


@dataclass(frozen=True, slots=True)
class Segment:
    """One part of the bar.

    Attributes:
        label: What the part is, shown in the legend.
        size_bytes: How much memory it takes.
        char: The fill character: each part has its own, so the bar reads without colour.
        style: Rich style for terminals with colour.
    """

    label: str
    size_bytes: int
    char: str
    style: str


class MemoryBar(Widget):
    """Parts of a device's memory stacked left to right against its capacity, and a legend below.

    A part that overflows the capacity is cut at the right edge and the legend says by how much.
    """

    DEFAULT_CSS = """
    MemoryBar {
        height: auto;
        width: 1fr;
    }
    """

    segments: reactive[tuple[Segment, ...]] = reactive(tuple, layout=True)
    """The parts, left to right."""
    capacity_bytes: reactive[int] = reactive(0, layout=True)
    """The whole bar's worth of memory."""
    caption: reactive[str] = reactive("")
    """What the capacity is, e.g. ``"usable of 79.6 GiB"``."""

    def render(self) -> RenderableType:
        """Draws the bar and its legend."""
        width = max(self.size.width, 10)
        bar = Text()
        capacity = max(self.capacity_bytes, 1)
        used_cells = 0
        for segment in self.segments:
            cells = round(segment.size_bytes / capacity * width)
            cells = max(0, min(cells, width - used_cells))
            if segment.size_bytes > 0 and cells == 0 and used_cells < width:
                cells = 1  # a part that exists gets at least one cell
            bar.append(segment.char * cells, style=segment.style)
            used_cells += cells
        bar.append(FREE_CHAR * (width - used_cells), style="dim")
        # Legend items wrap as wholes: a size never ends up alone on a line without its label.
        items: list[Text] = []
        total = 0
        for segment in self.segments:
            total += segment.size_bytes
            item = Text(segment.char * 2, style=segment.style)
            item.append(f" {segment.label} {size(segment.size_bytes)}")
            items.append(item)
        items.append(Text(f"{FREE_CHAR * 2} free {size(max(self.capacity_bytes - total, 0))}", style="dim"))
        if total > self.capacity_bytes:
            items.append(Text(f"OVER by {size(total - self.capacity_bytes)}", style="bold"))
        legend = Text(no_wrap=True, overflow="ellipsis")
        line_cells = 0
        for item in items:
            if line_cells and line_cells + 2 + item.cell_len > width:
                legend.append("\n")
                line_cells = 0
            elif line_cells:
                legend.append("  ")
                line_cells += 2
            legend.append_text(item)
            line_cells += item.cell_len
        lines: list[RenderableType] = [bar, legend]
        if self.caption:
            lines.append(Text(self.caption, style="dim"))
        return Group(*lines)
