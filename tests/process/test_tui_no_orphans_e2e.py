"""The real ``quant-tui`` app in a terminal (tmux), with a server it started, ended every way: nothing stays."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.process_tree import cmdline, end_and_check, running, tree, wait_for_tree
from tests.tui.test_tui_terminal import Terminal

QUANT_TUI = Path(sys.executable).parent / "quant-tui"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)"),
]
# How the app ends: q and the quit confirmation, ctrl+c (a key in the app; SIGINT from `kill -INT`),
# `kill`, the terminal going away (SSH drop: tmux closes the pane with SIGHUP), and SIGKILL. The
# first four end it while its server starts; SIGKILL, where only the watchdog is left to act, once the
# server's whole tree (API server, engine core) is up.
ENDINGS = ["q-then-y", "ctrl+c-then-SIGINT", "SIGTERM", "terminal-closed", "SIGKILL"]
# How long a server the app started runs before the early endings: well into its start-up.
STARTING_S = 5


def _pane_pid(terminal: Terminal) -> int:
    shown = subprocess.run(
        ["tmux", "display-message", "-p", "-t", terminal.name, "#{pane_pid}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(shown.stdout.strip())


def _server_starting(children: list[psutil.Process]) -> bool:
    """The app started a server: vLLM's API server and its watchdog run."""
    lines = [cmdline(p) for p in children]
    return any("engine.process.watchdog" in line for line in lines) and any(
        "vllm.entrypoints.openai.api_server" in line for line in lines
    )


def _server_up(children: list[psutil.Process]) -> bool:
    """The server's whole tree runs: the watchdog, vLLM's API server and its engine core."""
    names = []
    for process in children:
        try:
            names.append(process.name())
        except psutil.Error:
            continue
    return _server_starting(children) and any(name.startswith("VLLM::EngineCor") for name in names)


def _ender(ending: str, terminal: Terminal, pid: int) -> Callable[[], None]:
    def end() -> None:
        if ending == "q-then-y":
            terminal.send("q")
            terminal.wait_for("Quit quant-tui?")
            terminal.send("y")
        elif ending == "ctrl+c-then-SIGINT":
            os.kill(pid, signal.SIGINT)
        elif ending == "terminal-closed":
            terminal.close()
        else:
            os.kill(pid, getattr(signal, ending))

    return end


@pytest.fixture
def terminals() -> list[Terminal]:
    opened: list[Terminal] = []
    yield opened  # type: ignore[misc]
    for terminal in opened:
        terminal.close()


@pytest.mark.parametrize("ending", ENDINGS)
def test_the_app_with_a_server_it_started_leaves_nothing_however_it_ends(
    ending: str, demo_model: Path, tmp_path: Path, terminals: list[Terminal]
) -> None:
    """The app serves the demo model from its Serve screen, then ends: its whole tree and the watchdog go."""
    command = shlex.join([str(QUANT_TUI), "--model", str(demo_model)])
    terminal = Terminal(f"cd {shlex.quote(str(tmp_path))} && exec {command}")
    terminals.append(terminal)
    pid = _pane_pid(terminal)
    app = psutil.Process(pid)
    try:
        terminal.wait_for("[1 Hardware]", timeout=60)
        terminal.send("2")
        terminal.wait_for("Loaded demo", timeout=60)
        terminal.send("5")
        terminal.wait_for("[5 Serve]")
        terminal.send("s")
        terminal.wait_for("starting")
        if ending == "SIGKILL":
            wait_for_tree(pid, _server_up, 600, app.is_running)
        else:
            wait_for_tree(pid, _server_starting, 60, app.is_running)
            time.sleep(STARTING_S)
        if ending == "ctrl+c-then-SIGINT":
            # In the app ctrl+c is a key (the terminal is raw): it says how to quit and stops nothing.
            terminal.send("C-c")
            terminal.wait_for("to quit the app")
            assert _server_starting(running(tree(pid))) and app.is_running()
        end_and_check(app, _ender(ending, terminal, pid), tree(pid))
    finally:
        with contextlib.suppress(psutil.Error):
            for process in running([*tree(pid), app]):
                process.kill()
