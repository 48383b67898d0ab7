"""HelpScreen: every key of the app and of each screen, with what it does."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static


class HelpScreen(ModalScreen[None]):
    """A scrollable list of keys, section by section; Escape or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Close help")]

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > VerticalScroll {
        width: 76;
        max-width: 100%;
        height: 1fr;
        border: round $primary;
        background: $surface;
        padding: 0 1;
    }
    """

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
        """Creates the screen.

        Args:
            sections: ``(title, [(keys, description), ...])`` per section.
        """
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        """One table per section."""
        with VerticalScroll() as scroll:
            scroll.border_title = "Keys (Esc closes)"
            yield Static(
                "quant-tui takes you from a GPU box and a model to a quantized model served by vLLM.\n"
                "Walk the steps in order with n, or jump to one with its number.",
                classes="intro",
            )
            for title, keys in self.sections:
                table = Table(
                    title=Text(title, style="bold"),
                    title_justify="left",
                    show_header=False,
                    box=None,
                    padding=(0, 1),
                    expand=True,
                )
                table.add_column("key", style="bold", width=14, no_wrap=True)
                table.add_column("does", ratio=1)
                for key, description in keys:
                    table.add_row(key, description)
                yield Static(table)
        yield Footer()

    def on_mount(self) -> None:
        """Focuses the list so the arrows scroll it."""
        self.query_one(VerticalScroll).focus()

    def action_close(self) -> None:
        """Closes the help."""
        self.dismiss(None)
