"""MetricPanel: one dashboard figure with its current value and a Sparkline of its history."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline

# Ticks plotted: two minutes at the default 1 s polls; the sparkline squeezes them into its width.
HISTORY_POINTS = 120


class MetricPanel(Vertical):
    """A bordered panel: the latest value in words and numbers, and the recent history as a sparkline."""

    DEFAULT_CSS = """
    MetricPanel {
        height: 1fr;
        border: round $primary 50%;
        border-title-color: $text;
        padding: 0 1;
    }
    MetricPanel > .value {
        width: 1fr;
        height: auto;
        max-height: 4;
    }
    MetricPanel > Sparkline {
        height: 1fr;
        min-height: 1;
    }
    """

    def __init__(self, title: str, *, id: str | None = None) -> None:
        """Creates an empty panel.

        Args:
            title: What the panel shows, drawn in its border.
            id: The widget id.
        """
        super().__init__(id=id)
        self.border_title = title
        self._shown_value: str | None = None
        self._shown_points: list[float] | None = None

    def compose(self) -> ComposeResult:
        """A value line above the sparkline."""
        yield Label("waiting for data", classes="value")
        yield Sparkline([])

    def show(self, value: str, history: Sequence[float | None]) -> None:
        """Shows the latest value and the recent history (unknown ticks plot as zero).

        Only what changed is redrawn: a dashboard ticking every second should cost next to nothing.

        Args:
            value: The current figure(s) as text.
            history: The series, oldest first; the last :data:`HISTORY_POINTS` are plotted.
        """
        if value != self._shown_value:
            self._shown_value = value
            self.query_one(".value", Label).update(value)
        points = [point if point is not None else 0.0 for point in history[-HISTORY_POINTS:]]
        if points != self._shown_points:
            self._shown_points = points
            self.query_one(Sparkline).data = points
