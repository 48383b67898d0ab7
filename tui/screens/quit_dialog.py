"""QuitDialog: asks before quitting while a server or a quantization is running."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class QuitDialog(ModalScreen[bool]):
    """Names what is running and returns True when the user confirms quitting (which stops it)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes, stop and quit"),
        Binding("n,escape", "answer(False)", "No, keep running"),
    ]

    DEFAULT_CSS = """
    QuitDialog {
        align: center middle;
    }
    QuitDialog > Vertical {
        width: 64;
        max-width: 95%;
        height: auto;
        border: thick $warning;
        background: $surface;
        padding: 0 1;
    }
    QuitDialog .title {
        text-style: bold;
    }
    QuitDialog Horizontal {
        height: auto;
        margin-top: 1;
    }
    QuitDialog Button {
        margin-right: 2;
    }
    """

    def __init__(self, running: list[str]) -> None:
        """Creates the dialog.

        Args:
            running: What is running, e.g. ``["the vLLM server (pid 123)"]``.
        """
        super().__init__()
        self.running = running

    def compose(self) -> ComposeResult:
        """The question, what quitting stops, and the two answers."""
        with Vertical():
            yield Static("Quit quant-tui?", classes="title")
            yield Static(
                "Still running: " + "; ".join(self.running) + ".\nQuitting stops it cleanly first.",
                markup=False,
            )
            with Horizontal():
                yield Button("Stop and quit (y)", variant="warning", id="yes")
                yield Button("Keep running (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        """Focuses the safe answer."""
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Answers with the button pressed."""
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, quit_app: bool) -> None:
        """Answers from the keyboard.

        Args:
            quit_app: Whether to quit.
        """
        self.dismiss(quit_app)
