"""The real ``quant-tui`` in a real terminal (tmux, 100×30): keys in, screen text out, q and a clean exit."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.tui.test_tui_snapshots import write_tiny_llama

QUANT_TUI = Path(sys.executable).parent / "quant-tui"
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")


class Terminal:
    """A detached tmux session running one command."""

    def __init__(self, command: str, width: int = 100, height: int = 30) -> None:
        self.name = f"quant-tui-test-{uuid.uuid4().hex[:8]}"
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height), command],
            check=True,
        )

    def screen(self) -> str:
        """The visible text of the pane."""
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True, check=True
        ).stdout

    def send(self, *keys: str) -> None:
        """Sends keys by tmux name (``Escape``, ``C-q``) or as text."""
        for key in keys:
            subprocess.run(["tmux", "send-keys", "-t", self.name, key], check=True)
            time.sleep(0.2)

    def wait_for(self, *texts: str, timeout: float = 30.0) -> str:
        """Waits until every one of ``texts`` is on one capture of the screen; returns that screen.

        All at once, because a capture can land mid-redraw, half old screen and half new.
        """
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if all(text in screen for text in texts):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{texts!r} never appeared together; the screen shows:\n{screen}")
            time.sleep(0.2)

    def close(self) -> None:
        """Ends the session."""
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True, check=False)


@pytest.fixture
def terminal_factory() -> Iterator[type[Terminal]]:
    opened: list[Terminal] = []

    class Opened(Terminal):
        def __init__(self, command: str, width: int = 100, height: int = 30) -> None:
            super().__init__(command, width, height)
            opened.append(self)

    yield Opened
    for terminal in opened:
        terminal.close()


def test_quant_tui_walks_hardware_model_plan_and_quits_in_tmux(
    tmp_path: Path, terminal_factory: type[Terminal]
) -> None:
    write_tiny_llama(tmp_path / "tiny-llama")
    command = shlex.join([str(QUANT_TUI), "--gpu", "H100x2", "--model", "tiny-llama"])
    terminal = terminal_factory(f"cd {shlex.quote(str(tmp_path))} && {command}; echo EXITED:$?; sleep 30")

    terminal.wait_for("Planning for: 2× H100-SXM", "[1 Hardware]", "Next: model")

    terminal.send("n")
    terminal.wait_for("Loaded tiny-llama", "2 KV heads", "[2 Model]")

    terminal.send("n")
    # "--method fp8" is the quantize command (the plan text may wrap it)
    terminal.wait_for("FITS", "[3 Plan]", "tiny-llama on 2× H100-SXM", "--method fp8")

    terminal.send("]")
    terminal.wait_for("ctx 8,192")

    terminal.send("?")
    terminal.wait_for("Keys (Esc closes)", "Go to Dashboard")
    terminal.send("Escape")
    terminal.wait_for("Ctx×2")

    terminal.send("q")  # nothing runs: q quits at once, as in htop
    terminal.wait_for("EXITED:0")


def _processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if text in " ".join(process.info.get("cmdline") or []):
            found.append(process)
    return found


@pytest.mark.e2e
def test_the_whole_flow_on_the_demo_model_then_q_and_the_quit_confirmation_in_tmux(
    demo_model: Path, tmp_path: Path, terminal_factory: type[Terminal]
) -> None:
    # A copy of the demo model, so its checkpoint is made here and the server's command line names it.
    model = tmp_path / "demo"
    shutil.copytree(demo_model, model)
    command = shlex.join([str(QUANT_TUI), "--model", str(model)])
    terminal = terminal_factory(f"cd {shlex.quote(str(tmp_path))} && {command}; echo EXITED:$?; sleep 60")

    terminal.wait_for("[1 Hardware]")
    terminal.send("n")
    terminal.wait_for("[2 Model]")
    terminal.wait_for("Loaded demo", timeout=60)
    terminal.send("n")
    terminal.wait_for("[3 Plan]")
    time.sleep(1)
    terminal.send("n")
    deadline = time.monotonic() + 30
    while "[4 Quantize]" not in (screen := terminal.screen()) and "[5 Serve]" not in screen:
        assert time.monotonic() < deadline, screen
        time.sleep(0.2)
    if "[4 Quantize]" in screen:
        terminal.send("s")
        terminal.wait_for("Made: press n to serve it.", timeout=600)
        terminal.send("n")
        terminal.wait_for("[5 Serve]")
    terminal.send("s")
    terminal.wait_for("healthy", timeout=300)
    servers = [
        process for process in _processes_mentioning(str(tmp_path)) if "vllm" in " ".join(process.cmdline())
    ]
    assert servers, "the server should run now"
    # The engine core and workers retitle themselves, so the tree is recorded while it runs.
    tree = [*servers, *(child for server in servers for child in server.children(recursive=True))]
    terminal.send("n")
    terminal.wait_for("watching", "[6 Dashboard]", timeout=60)

    # q asks first while the server runs; n keeps it, q then y stops it and quits.
    terminal.send("q")
    terminal.wait_for("Quit quant-tui?", "the vLLM server")
    terminal.send("n")
    terminal.wait_for("watching")
    assert all(process.is_running() for process in servers)
    terminal.send("q")
    terminal.wait_for("Quit quant-tui?")
    terminal.send("y")
    terminal.wait_for("EXITED:0", timeout=120)
    time.sleep(1)
    left = [process for process in tree if process.is_running() and process.status() != psutil.STATUS_ZOMBIE]
    assert not left, left
