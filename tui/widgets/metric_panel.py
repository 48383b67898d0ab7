"""MetricPanel: one dashboard figure with its current value and a Sparkline of its history."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline


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

    def compose(self) -> ComposeResult:
        """A value line above the sparkline."""
        yield Label("waiting for data", classes="value")
        yield Sparkline([])

    def show(self, value: str, history: Sequence[float | None]) -> None:
        """Shows the latest value and the history (unknown ticks plot as zero).

        Args:
            value: The current figure(s) as text.
            history: The series, oldest first.
        """
        self.query_one(".value", Label).update(value)
        self.query_one(Sparkline).data = [point if point is not None else 0.0 for point in history]
