"""The app's one table of screens: each step of the guided flow (mode, key, label, screen class) and the Bench screen."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from textual.screen import Screen

Mode = Literal["hardware", "model", "plan", "quantize", "serve", "dashboard", "bench"]
"""The name of a screen the app switches to (a Textual mode)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One screen of the app, and where its class lives (imported when the screen is first shown).

    Attributes:
        mode: The mode name the app switches to.
        key: The key that opens it from anywhere (``None``: reached from other screens only).
        label: Its name in the step bar, the help and the command palette.
        module: The module that defines its screen class.
        class_name: The screen class's name.
    """

    mode: Mode
    key: str | None
    label: str
    module: str
    class_name: str

    def screen_type(self) -> type[Screen[Any]]:
        """The screen class, imported on first use so the first frame pays for the first screen only."""
        screen_type: type[Screen[Any]] = getattr(importlib.import_module(self.module), self.class_name)
        return screen_type

    def new_screen(self) -> Screen[Any]:
        """A fresh screen of this step (the factory Textual's ``add_mode`` calls)."""
        return self.screen_type()()


# The guided flow, in the order it is walked; each step's key opens it from anywhere.
STEPS: tuple[Step, ...] = (
    Step("hardware", "1", "Hardware", "tui.screens.hardware", "HardwareScreen"),
    Step("model", "2", "Model", "tui.screens.model", "ModelScreen"),
    Step("plan", "3", "Plan", "tui.screens.plan", "PlanScreen"),
    Step("quantize", "4", "Quantize", "tui.screens.quantize", "QuantizeScreen"),
    Step("serve", "5", "Serve", "tui.screens.serve", "ServeScreen"),
    Step("dashboard", "6", "Dashboard", "tui.screens.dashboard", "DashboardScreen"),
)

# Off the flow's line: opened with b from the plan and the dashboard (and the command palette).
BENCH = Step("bench", None, "Bench", "tui.screens.bench", "BenchScreen")


def step_for(mode: str, steps: tuple[Step, ...] = (*STEPS, BENCH)) -> Step | None:
    """The step of a mode name, ``None`` when ``steps`` has none by that name."""
    return next((step for step in steps if step.mode == mode), None)
