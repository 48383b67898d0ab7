"""StepScreen: the frame every step of the guided flow shares (step bar, body, footer, worker errors)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

from tui.widgets.step_bar import StepBar

if TYPE_CHECKING:
    from tui.app import QuantTuiApp
    from tui.state import Selection


class StepScreen(Screen[None]):
    """A step of the flow: the step bar on top, the screen's own body, the footer with its keys.

    Subclasses implement :meth:`compose_body` and name their mode in ``MODE``. A worker that fails
    (``exit_on_error=False``) is reported through the app's error dialog, titled with the worker's
    description, so one handler turns every background failure into the same dialog.
    """

    MODE: ClassVar[str] = ""
    HELP_TITLE: ClassVar[str] = ""

    @property
    def quant_app(self) -> QuantTuiApp:
        """The app, typed (a step screen only ever runs inside :class:`tui.app.QuantTuiApp`)."""
        return cast("QuantTuiApp", self.app)

    @property
    def selection(self) -> Selection:
        """The choices made so far."""
        return self.quant_app.selection

    def compose(self) -> ComposeResult:
        """Step bar, body, footer."""
        yield StepBar(steps=self.quant_app.steps)
        yield from self.compose_body()
        yield Footer(compact=True, show_command_palette=False)

    def compose_body(self) -> ComposeResult:
        """The screen's own widgets."""
        yield from ()

    def on_mount(self) -> None:
        """Keeps the step bar in step with the app."""
        bar = self.query_one(StepBar)
        bar.current = self.MODE
        self.watch(self.quant_app, "done_steps", self._show_done, init=True)

    def _show_done(self, done: frozenset[str]) -> None:
        self.query_one(StepBar).done = done

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Shows a failed worker's error in the error dialog."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.quant_app.show_error(event.worker.description or "Working", event.worker.error)
