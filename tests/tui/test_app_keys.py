"""Pilot tests of the keys people expect from terminal monitors: q quits, with a confirmation while work runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from textual.binding import Binding
from textual.widgets import Input

from tests.tui.test_tui_flow import SIZE, fixed_hardware, wait_for
from tui.app import QuantTuiApp, create_app
from tui.screens.error_dialog import ErrorDialog
from tui.screens.help import HelpScreen
from tui.screens.model import ModelScreen
from tui.screens.quit_dialog import QuitDialog


class SleepingServer:
    """A real process standing in for a vLLM server the app started: it runs until stopped."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        self.stopped = False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.stopped = True


@pytest.fixture
def sleeping_server() -> SleepingServer:
    server = SleepingServer()
    yield server  # type: ignore[misc]
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


@pytest.mark.parametrize("key", ["1", "3", "6"])
async def test_q_quits_at_once_from_a_step_when_nothing_runs(key: str, tmp_path: Path) -> None:
    app = create_app(model=str(tmp_path / "missing"), gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selection.target is not None, timeout=30)
        await pilot.press(key)
        await pilot.pause()
        await pilot.press("q")
        await pilot.pause()
        assert app.return_code == 0


async def test_q_asks_first_while_a_server_runs_and_n_keeps_it(sleeping_server: SleepingServer) -> None:
    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selection.target is not None, timeout=30)
        app.server, app.server_pid = sleeping_server, sleeping_server.process.pid
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitDialog), timeout=10)
        await pilot.press("q")  # asking again while the dialog is open does not stack a second one
        await pilot.pause()
        assert len([screen for screen in app.screen_stack if isinstance(screen, QuitDialog)]) == 1
        await pilot.press("n")
        await wait_for(pilot, lambda: not isinstance(app.screen, QuitDialog), timeout=10)
        assert app.return_code is None and sleeping_server.process.poll() is None
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitDialog), timeout=10)
        await pilot.press("y")
        await wait_for(pilot, lambda: app.return_code is not None, timeout=30)
    assert app.return_code == 0 and sleeping_server.stopped
    assert sleeping_server.process.poll() is not None


async def test_q_in_the_path_field_is_typed_and_ctrl_q_still_quits(tmp_path: Path) -> None:
    app = create_app(model=str(tmp_path / "missing"), gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        # The missing model folder is reported first; close that to get to the path field.
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorDialog), timeout=30)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen), timeout=30)
        await pilot.press("slash")
        await pilot.pause()
        field = app.screen.query_one("#path", Input)
        assert field.has_focus
        field.value = ""
        await pilot.press("q", "w", "q")
        await pilot.pause()
        assert field.value == "qwq" and app.return_code is None
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert app.return_code == 0


async def test_q_on_the_help_screen_closes_the_help_only() -> None:
    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), timeout=10)
        await pilot.press("q")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), timeout=10)
        assert app.return_code is None
        sections = dict(app.key_sections())
        assert {"q", "ctrl+q"} <= {key for key, _ in sections["Everywhere"]}


def _all_binding_owners() -> list[type]:
    from tui.screens.help import HelpScreen

    app = QuantTuiApp()
    return [QuantTuiApp, QuitDialog, ErrorDialog, HelpScreen, *app.step_screens().values()]


@pytest.mark.parametrize("owner", _all_binding_owners(), ids=lambda owner: owner.__name__)
def test_every_binding_says_what_it_does(owner: type) -> None:
    bindings = [item for item in owner.BINDINGS if isinstance(item, Binding)]
    assert bindings and len(bindings) == len(owner.BINDINGS)
    for binding in bindings:
        assert binding.description.strip(), f"{owner.__name__}: {binding.key} has no description"
