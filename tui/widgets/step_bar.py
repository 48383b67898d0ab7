"""StepBar: the guided flow's steps on one line, with the key that opens each and the current one marked."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.steps import STEPS, Step


class StepBar(Widget):
    """One line naming every step with its key; the current step is bracketed, finished ones ticked.

    The marks are characters, not only colours, so the bar reads the same without colour.
    """

    DEFAULT_CSS = """
    StepBar {
        height: 1;
        width: 1fr;
        background: $panel;
        color: $text-muted;
    }
    """

    current: reactive[str] = reactive("hardware")
    """The mode name of the step on screen."""
    done: reactive[frozenset[str]] = reactive(frozenset())
    """Mode names of the steps already completed."""

    def __init__(self, steps: tuple[Step, ...] = STEPS, **kwargs: object) -> None:
        """Creates the bar.

        Args:
            steps: The steps shown, in order.
            **kwargs: Passed to ``Widget``.
        """
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._steps = steps

    def render(self) -> Text:
        """Draws the steps."""
        line = Text("quant-tui ", style="bold")
        for step in self._steps:
            mark = "✓" if step.mode in self.done else " "
            if step.mode == self.current:
                line.append(f"[{step.key} {step.label}]", style="bold reverse")
            else:
                line.append(f" {step.key} {step.label} ")
            line.append(mark)
        return line
