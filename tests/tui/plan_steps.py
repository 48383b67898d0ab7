"""Pilot steps on the Plan screen shared by its tests: set one option through the settings dialog, serve the as-is candidate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from engine.plan.recommender import Candidate
from tests.tui.test_tui_flow import wait_for
from tui.screens.plan import PlanScreen
from tui.screens.plan_settings import PlanSettingsDialog
from tui.screens.serve import ServeScreen


async def set_plan_option(pilot: Pilot[Any], field: str, value: str, until: Callable[[], bool]) -> None:
    """Sets one option in the Plan screen's settings dialog (o), applies it, and waits back on the plan until ``until``."""
    app = pilot.app
    await pilot.press("o")
    await wait_for(pilot, lambda: isinstance(app.screen, PlanSettingsDialog), timeout=10)
    app.screen.query_one(f"#option-{field}", Input).value = value
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen) and until(), timeout=10)


async def serve_as_is(pilot: Pilot[Any], plan: PlanScreen) -> tuple[Candidate, ServeScreen]:
    """Highlights the plan's first candidate that needs no quantization, presses n and waits for the Serve screen.

    Returns:
        The highlighted candidate and the Serve screen n opened for it.
    """
    app = pilot.app
    assert plan.recommendation is not None
    as_is = next(i for i, c in enumerate(plan.recommendation.candidates) if not c.needs_quantization)
    plan.query_one("#candidates", DataTable).move_cursor(row=as_is)
    await pilot.pause()
    chosen = plan.highlighted
    assert chosen is not None and not chosen.needs_quantization
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, ServeScreen), timeout=10)
    serve = app.screen
    assert isinstance(serve, ServeScreen)
    return chosen, serve
