"""ErrorDialog: a modal that says what went wrong and what to do; the app keeps running behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from engine.errors import QuantTuiError


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """An error as the user reads it.

    Attributes:
        title: What was being done, e.g. ``"Loading the model"``.
        cause: What went wrong, in one or two lines.
        fix: What the user can do about it.
    """

    title: str
    cause: str
    fix: str


def describe_error(title: str, error: BaseException) -> ErrorReport:
    """Turns an exception raised by the engine into cause and fix.

    ``QuantTuiError`` messages already say what to do; a server failure carries a diagnosis; anything
    else is a bug in quant-tui and is reported as one.

    Args:
        title: What was being done when it failed.
        error: The exception.
    """
    diagnosis = getattr(error, "diagnosis", None)
    if diagnosis is not None and hasattr(diagnosis, "cause") and hasattr(diagnosis, "fix"):
        return ErrorReport(title, str(diagnosis.cause), str(diagnosis.fix))
    if isinstance(error, QuantTuiError):
        if error.fix:
            return ErrorReport(title, error.cause, error.fix[:1].upper() + error.fix[1:])
        return ErrorReport(title, error.cause, "Change the input and try again.")
    return ErrorReport(
        title,
        f"{type(error).__name__}: {error}",
        "This is a bug in quant-tui, not something you did. The app keeps running; please report it.",
    )


class ErrorDialog(ModalScreen[None]):
    """Shows an :class:`ErrorReport` until dismissed with Enter or Escape."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close", show=True),
        Binding("enter", "dismiss", "Close", show=False),
    ]

    DEFAULT_CSS = """
    ErrorDialog {
        align: center middle;
    }
    ErrorDialog > Vertical {
        width: 72;
        max-width: 95%;
        height: auto;
        max-height: 90%;
        border: thick $error;
        background: $surface;
        padding: 0 1;
    }
    ErrorDialog .title {
        text-style: bold;
        width: 1fr;
    }
    ErrorDialog .heading {
        text-style: bold underline;
        margin-top: 1;
    }
    ErrorDialog Button {
        margin-top: 1;
    }
    """

    def __init__(self, report: ErrorReport) -> None:
        """Creates the dialog.

        Args:
            report: What to show.
        """
        super().__init__()
        self.report = report

    def compose(self) -> ComposeResult:
        """Title, cause, fix and an OK button."""
        with Vertical():
            yield Static(f"ERROR: {self.report.title}", classes="title")
            yield Static("What happened", classes="heading")
            yield Static(self.report.cause, id="cause", markup=False)
            yield Static("What to do", classes="heading")
            yield Static(self.report.fix, id="fix", markup=False)
            yield Button("OK (Enter)", variant="error", id="ok")

    def on_mount(self) -> None:
        """Focuses the button so Enter closes the dialog."""
        self.query_one(Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Closes the dialog."""
        event.stop()
        self.dismiss(None)

    async def action_dismiss(self, result: None = None) -> None:
        """Closes the dialog."""
        self.dismiss(None)
