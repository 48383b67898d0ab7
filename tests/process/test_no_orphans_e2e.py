"""The real ``quant-tui`` process, ended by any signal, leaves no process behind: not a demo build, not a server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.quant_tui_command import Output, start_quant_tui, wait_serving

# Signals a user or a system sends: ctrl+c, `kill`, a dropped SSH session, and the one nothing can catch.
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]
# The watchdog polls every 0.5 s and gives a group 5 s between SIGTERM and SIGKILL.
GONE_WITHIN_S = 20


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def _wait_gone(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while _alive(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _alive(processes)


def _wait_for(app: subprocess.Popen[str], found: object, seconds: float) -> list[psutil.Process]:
    """Waits until ``found(tree)`` is true for the app's process tree; returns that tree."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert app.poll() is None, "quant-tui ended before the test could signal it"
        tree = _tree(app.pid)
        if found(tree):  # type: ignore[operator]
            return tree
        time.sleep(0.2)
    raise AssertionError("the expected child processes never appeared")


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _end(app: subprocess.Popen[str], signum: int, tree: list[psutil.Process]) -> None:
    try:
        os.kill(app.pid, signum)
        app.wait(GONE_WITHIN_S)
        assert [p.pid for p in _wait_gone(tree, GONE_WITHIN_S)] == []
    finally:
        for process in _alive([*tree, psutil.Process(app.pid)] if app.poll() is None else tree):
            process.kill()
        if app.poll() is None:
            app.kill()
        app.wait(5)


@pytest.mark.e2e
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_demo_build_ends_with_quant_tui(signum: int, tmp_path: Path) -> None:
    """`quant-tui recommend --model demo` on a fresh cache builds the demo model in a child: it goes too."""
    env = {**os.environ, "QUANT_TUI_CACHE": str(tmp_path / "cache")}
    app = start_quant_tui(["recommend", "--model", "demo"], env)

    def builder_and_watchdog(tree: list[psutil.Process]) -> bool:
        lines = [_cmdline(p) for p in tree]
        return any("engine.model.demo_training" in c for c in lines) and any(
            "engine.process.watchdog" in c for c in lines
        )

    tree = _wait_for(app, builder_and_watchdog, 60)
    _end(app, signum, tree)
    assert not list((tmp_path / "cache").glob("demo-model-*/config.json"))


@pytest.mark.e2e
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_served_model_ends_with_quant_tui(signum: int, demo_model: Path) -> None:
    """`quant-tui serve` ended by any signal once healthy: the API server, engine, workers and watchdog go."""
    app = start_quant_tui(["serve", "--model", str(demo_model), "--max-model-len", "512", "--enforce-eager"])
    wait_serving(Output(app))
    tree = _tree(app.pid)
    commands = [_cmdline(p) for p in tree]
    assert any("vllm.entrypoints.openai.api_server" in c for c in commands), commands
    assert any("engine.process.watchdog" in c for c in commands), commands
    assert len(tree) >= 4  # watchdog, API server, engine core, worker
    _end(app, signum, tree)


@pytest.mark.e2e
def test_serve_says_the_engine_died_and_exits_non_zero(demo_model: Path) -> None:
    """The engine core killed under a healthy server (as the OOM killer does): a diagnosis, exit 1, nothing left."""
    app = start_quant_tui(["serve", "--model", str(demo_model), "--max-model-len", "512", "--enforce-eager"])
    output = Output(app)
    wait_serving(output)
    tree = _tree(app.pid)
    cores = [p for p in tree if p.name().startswith("VLLM::EngineCor")]
    assert len(cores) == 1, [p.name() for p in tree]
    try:
        cores[0].kill()
        app.wait(60)
        printed = output.wait_closed()
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(5)
    assert app.returncode == 1
    assert (
        "quant-tui: the vLLM server stopped on its own: the vLLM engine process died unexpectedly" in printed
    )
    assert "quant-tui: fix: look for an OOM kill" in printed
    assert "Traceback" not in printed
    assert [p.pid for p in _wait_gone(tree, GONE_WITHIN_S)] == []
