"""The real ``quant-tui`` subcommands, ended by any signal, leave nothing behind: no demo build, server, bench or calibration."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.process_tree import (
    GONE_WITHIN_S,
    cmdline,
    signal_and_check,
    tree,
    wait_for_tree,
    wait_running_gone,
)
from tests.quant_tui_command import Output, start_quant_tui, wait_serving

# Signals a user or a system sends: ctrl+c, `kill`, a dropped SSH session, and the one nothing can catch.
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]
SERVE_DEMO = ["--max-model-len", "512", "--enforce-eager"]
# Started a few seconds apart, so the servers' imports overlap but their port picks do not race.
STAGGER_S = 3


def _names(signals: list[int]) -> list[str]:
    return [signal.Signals(signum).name for signum in signals]


def _has(*markers: str) -> Callable[[list[psutil.Process]], bool]:
    """A tree test: every marker is in some process's command line."""

    def found(children: list[psutil.Process]) -> bool:
        lines = [cmdline(p) for p in children]
        return all(any(marker in line for line in lines) for marker in markers)

    return found


def _wait_for(app: subprocess.Popen[str], found: object, seconds: float) -> list[psutil.Process]:
    """``found(tree)`` true for the app's tree."""
    return wait_for_tree(app.pid, found, seconds, lambda: app.poll() is None)  # type: ignore[arg-type]


def _end(app: subprocess.Popen[str], signum: int, children: list[psutil.Process]) -> None:
    signal_and_check(app, signum, children)


def _stop_all(apps: list[subprocess.Popen[str]]) -> None:
    for app in apps:
        if app.poll() is None:
            os.killpg(app.pid, signal.SIGKILL)
        app.wait(10)


@pytest.mark.e2e
@pytest.mark.parametrize("signum", SIGNALS, ids=_names(SIGNALS))
def test_demo_build_ends_with_quant_tui(signum: int, tmp_path: Path) -> None:
    """`quant-tui recommend --model demo` on a fresh cache builds the demo model in a child: it goes too."""
    env = {**os.environ, "QUANT_TUI_CACHE": str(tmp_path / "cache")}
    app = start_quant_tui(["recommend", "--model", "demo"], env)
    Output(app)
    children = _wait_for(app, _has("engine.model.demo_training", "engine.process.watchdog"), 60)
    signal_and_check(app, signum, children)
    assert not list((tmp_path / "cache").glob("demo-model-*/config.json"))


@pytest.mark.e2e
def test_served_model_ends_with_quant_tui_by_every_signal(demo_model: Path) -> None:
    """`quant-tui serve` ended by each signal once healthy: the API server, engine, workers and watchdog go.

    One server per signal, all started together: their start-ups overlap on the cores.
    """
    apps = []
    try:
        for _ in SIGNALS:
            apps.append(start_quant_tui(["serve", "--model", str(demo_model), *SERVE_DEMO]))
            time.sleep(STAGGER_S)
        for app in apps:
            wait_serving(Output(app), timeout=600)
        trees = [tree(app.pid) for app in apps]
        for children in trees:
            assert _has("vllm.entrypoints.openai.api_server", "engine.process.watchdog")(children)
            assert len(children) >= 4  # watchdog, API server, engine core, worker
        for app, signum, children in zip(apps, SIGNALS, trees, strict=True):
            signal_and_check(app, signum, children)
    finally:
        _stop_all(apps)


@pytest.mark.e2e
def test_serve_says_the_engine_died_and_exits_non_zero(demo_model: Path) -> None:
    """The engine core killed under a healthy server (as the OOM killer does): a diagnosis, exit 1, nothing left."""
    app = start_quant_tui(["serve", "--model", str(demo_model), *SERVE_DEMO])
    output = Output(app)
    wait_serving(output)
    children = tree(app.pid)
    cores = [p for p in children if p.name().startswith("VLLM::EngineCor")]
    assert len(cores) == 1, [p.name() for p in children]
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
    assert [p.pid for p in wait_running_gone(children, GONE_WITHIN_S)] == []


BENCH_SIGNALS = [signal.SIGTERM, signal.SIGKILL]


@pytest.mark.e2e
def test_bench_ended_mid_run_leaves_no_server(demo_model: Path, tmp_path: Path) -> None:
    """`quant-tui bench` (it serves each variant itself) ended by SIGTERM and SIGKILL while its load runs."""
    apps: list[subprocess.Popen[str]] = []
    try:
        # One after the other: two servers starting at once on a 2-core CI box took over 600 s.
        for signum in BENCH_SIGNALS:
            work = tmp_path / signal.Signals(signum).name
            app = start_quant_tui(
                [
                    *("bench", "--model", str(demo_model), "--methods", "bf16", "--no-quality"),
                    *("--work-dir", str(work), "--duration", "600", "--concurrency", "2"),
                    *("--input-len", "16", "--output-len", "16"),
                    *("--save-result", str(work / "result.json")),
                ]
            )
            apps.append(app)
            output = Output(app)
            # The progress line "[1/1 bf16] load…" says the server is up and the load runs.
            assert output.wait_for("[1/1 bf16] load", 600) is not None, output.text
            children = tree(app.pid)
            assert _has("vllm.entrypoints.openai.api_server", "engine.process.watchdog")(children)
            signal_and_check(app, signum, children)
    finally:
        _stop_all(apps)
    assert list(tmp_path.rglob("result.json")) == []  # no result of a run that never finished


CALIBRATION_SIGNALS = [signal.SIGTERM, signal.SIGKILL]


@pytest.mark.e2e
def test_quantize_ended_mid_calibration_leaves_no_worker_or_partial_checkpoint(
    demo_model: Path, tmp_path: Path
) -> None:
    """`quant-tui quantize --method gptq-w4a16` ended by SIGTERM and SIGKILL while llm-compressor calibrates."""
    from engine.quantize.llmcompressor_env import ensure_llmcompressor_env

    # Made here when no earlier test made it (a fresh CI clone runs this file first): the kill must
    # land in calibration, not in the environment's pip install.
    ensure_llmcompressor_env()
    apps, outputs = [], []
    outs = [tmp_path / signal.Signals(signum).name / "out" for signum in CALIBRATION_SIGNALS]
    try:
        for out in outs:
            apps.append(
                start_quant_tui(
                    ["quantize", "--method", "gptq-w4a16", "--model", str(demo_model), "--out", str(out)]
                )
            )
            outputs.append(Output(apps[-1]))
        for output in outputs:
            assert output.wait_for("calibrating", 300) is not None, output.text
        trees = [tree(app.pid) for app in apps]
        for app, signum, children in zip(apps, CALIBRATION_SIGNALS, trees, strict=True):
            assert _has("llmcompressor_worker", "engine.process.watchdog")(children), [
                cmdline(p) for p in children
            ]
            signal_and_check(app, signum, children)
    finally:
        _stop_all(apps)
    for out in outs:
        assert not out.exists()
    # SIGTERM lets quant-tui remove its staging folder and the folder it made for it; after SIGKILL the next
    # run does (remove_stale_partials).
    assert not outs[0].parent.exists()
