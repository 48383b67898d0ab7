"""Pilot tests of the guided app at 80×24: hardware, model and plan screens with real engine calls."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.binding import Binding
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from engine.hardware.detect import GpuInfo, HardwareSnapshot, HostInfo, detect_hardware, target_from_spec
from engine.model.inspect_model import inspect_model
from engine.plan.recommender import PlanRequest, recommend
from tui.app import QuantTuiApp, create_app
from tui.screens.error_dialog import ErrorDialog
from tui.screens.hardware import HardwareScreen
from tui.screens.help import HelpScreen
from tui.screens.model import ModelScreen
from tui.screens.plan import PlanScreen
from tui.screens.quantize import QuantizeScreen

SIZE = (80, 24)
GIB = 2**30


def fixed_hardware(with_gpu: bool = False) -> HardwareSnapshot:
    """A hardware snapshot that is the same on every machine (for deterministic screens)."""
    host = HostInfo(
        cpu_model="Example CPU 64-Core",
        physical_cores=64,
        logical_cores=128,
        memory_total_bytes=512 * GIB,
        memory_available_bytes=384 * GIB,
        cpu_flags=frozenset({"avx2", "avx512f", "amx_bf16"}),
        cpu_percent=3.0,
    )
    gpus: tuple[GpuInfo, ...] = ()
    if with_gpu:
        gpus = tuple(
            GpuInfo(
                index=index,
                name="NVIDIA H100 80GB HBM3",
                uuid=f"GPU-{index}",
                compute_capability=(9, 0),
                memory_total_bytes=81559 * 2**20,
                memory_used_bytes=(4 + 10 * index) * GIB,
                memory_free_bytes=(81559 * 2**20) - (4 + 10 * index) * GIB,
                utilization_percent=0.0,
                memory_utilization_percent=0.0,
                temperature_c=35.0,
                power_w=70.0,
                power_limit_w=700.0,
                mig_mode=False,
            )
            for index in range(2)
        )
    return HardwareSnapshot(
        gpus=gpus,
        host=host,
        driver_version="550.54.15" if with_gpu else None,
        cuda_driver_version="12.4" if with_gpu else None,
        nvml_status="ok" if with_gpu else "NVML library not found (no NVIDIA driver installed)",
    )


async def wait_for(pilot: Pilot[Any], condition: Callable[[], bool], timeout: float = 600.0) -> None:
    """Lets the app run until ``condition`` holds (the demo model's first build takes minutes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the app did not get there in time")
        await pilot.pause(0.05)


async def open_quantize_screen(pilot: Pilot[Any]) -> None:
    """Loads the app's model (2), takes the plan's first recommendation (3, n) and waits for the Quantize screen."""
    app = pilot.app
    assert isinstance(app, QuantTuiApp)
    await pilot.press("2")
    await wait_for(pilot, lambda: app.selection.model is not None, timeout=60)
    await pilot.press("3")
    await pilot.pause()
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, QuantizeScreen))


def static_text(widget: Static) -> str:
    """The plain text a Static shows (rich renderables printed without styles)."""
    console = Console(width=200, file=io.StringIO(), color_system=None)
    console.print(widget.content)
    return console.file.getvalue()  # type: ignore[attr-defined]


def screen_text(app: QuantTuiApp, selector: str) -> str:
    """The plain text of the Static ``selector`` on the current screen."""
    return static_text(app.screen.query_one(selector, Static))


async def test_hardware_screen_plans_for_a_catalogued_gpu() -> None:
    app = create_app(gpu="H100x2", hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(
            pilot, lambda: isinstance(app.screen, HardwareScreen) and app.selection.target is not None
        )
        await pilot.pause()
        assert app.selection.target == target_from_spec("H100x2")
        assert "Planning for: 2× H100-SXM" in screen_text(app, "#target-line")
        assert "No NVIDIA GPU" in screen_text(app, "#hardware-note")
        await pilot.press("minus")
        assert app.selection.target is not None and app.selection.target.count == 1
        await pilot.press("plus", "plus", "plus")
        assert app.selection.target.count == 4


async def test_hardware_screen_shows_detected_gpus_and_picks_this_machine() -> None:
    app = create_app(hardware=fixed_hardware(with_gpu=True))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selection.target is not None)
        await pilot.pause()
        target = app.selection.target
        assert (
            target is not None and target.kind == "gpu" and target.count == 2 and target.source == "detected"
        )
        cards = [static_text(card) for card in app.screen.query(".card").results(Static)]
        assert len(cards) == 3  # two GPUs and the host
        assert "GPU 1: NVIDIA H100 80GB HBM3" in cards[1] and "compute capability 9.0" in cards[1]


async def test_hardware_screen_detects_this_machine() -> None:
    expected = detect_hardware()
    app = create_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selection.target is not None, timeout=30)
        assert app.selection.hardware is not None
        assert len(app.selection.hardware.gpus) == len(expected.gpus)
        target = app.selection.target
        assert target is not None and target.kind == ("gpu" if expected.gpus else "cpu")


async def test_unknown_gpu_name_shows_the_error_dialog_and_the_app_keeps_running() -> None:
    app = create_app(gpu="H999", hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorDialog))
        assert "H999" in screen_text(app, "#cause") + screen_text(app, "#fix")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HardwareScreen))
        assert app.selection.target is not None and app.selection.target.kind == "cpu"


async def test_a_folder_that_is_not_a_model_shows_the_error_dialog(tmp_path: Path) -> None:
    app = create_app(model=str(tmp_path), gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorDialog))
        assert "config.json" in screen_text(app, "#cause")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen))
        assert app.selection.model is None


async def test_guided_flow_on_the_demo_model_from_hardware_to_quantize(demo_model: Path) -> None:
    app = create_app(gpu="H100x2", hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selection.target is not None)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen) and app.selection.model is not None)
        model = inspect_model(demo_model)
        assert app.selection.model == model
        await pilot.pause()
        summary = screen_text(app, "#model-summary")
        assert model.name in summary and f"{model.num_kv_heads} KV heads" in summary
        assert "none (16-bit weights)" in summary

        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, PlanScreen)
        expected = recommend(model, target_from_spec("H100x2"), PlanRequest())
        table = screen.query_one("#candidates", DataTable)
        assert [table.get_row_at(row)[1] for row in range(table.row_count)] == [
            candidate.method for candidate in expected.candidates
        ]
        assert "vllm serve" in screen_text(app, "#plan-text")

        # The knobs recompute at once.
        await pilot.press("left_square_bracket", "plus", "g", "k")
        request = screen.request
        assert request.max_model_len == expected.max_model_len // 2
        assert request.concurrency == 2
        assert request.goal == "memory"
        assert request.kv_cache_dtype == "auto"
        assert screen.recommendation == recommend(model, target_from_spec("H100x2"), request)
        assert f"ctx {request.max_model_len:,}" in screen_text(app, "#knobs")

        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, QuantizeScreen))
        chosen = app.selection.candidate
        assert chosen is not None and chosen == screen.recommendation.candidates[0]
        assert app.done_steps >= {"hardware", "model", "plan"}


async def test_help_lists_every_key_of_every_screen() -> None:
    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        sections = dict(app.key_sections())
        for mode, screen_type in app.step_screens().items():
            title = getattr(screen_type, "HELP_TITLE", mode)
            listed = sections[title]
            assert len(listed) == len(screen_type.BINDINGS)
            assert all(description for _, description in listed)
        assert {"1", "2", "3", "4", "5", "6", "? / f1", "ctrl+q"} <= {
            key for key, _ in sections["Everywhere"]
        }
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HardwareScreen))


async def test_quit_with_nothing_running_exits_at_once() -> None:
    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert app.return_code == 0


@pytest.mark.parametrize("key", ["1", "2", "3", "4", "5", "6"])
async def test_every_step_opens_from_its_key(key: str, tmp_path: Path) -> None:
    app = create_app(model=str(tmp_path / "missing"), gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(key)
        await pilot.pause()
        mode = next(step.mode for step in app.steps if step.key == key)
        assert app.current_mode == mode


async def test_command_palette_offers_the_current_screens_actions(tmp_path: Path) -> None:
    app = create_app(model=str(tmp_path / "missing"), gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selection.target is not None)
        await pilot.press("3")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        plan = app.screen
        assert isinstance(plan, PlanScreen)
        titles = [command.title for command in app.get_system_commands(plan)]
        assert titles[: len(PlanScreen.BINDINGS)] == [
            binding.tooltip for binding in PlanScreen.BINDINGS if isinstance(binding, Binding)
        ]
        goal = plan.request.goal
        await pilot.press("ctrl+p")
        await pilot.pause()
        for character in "Cycle the goal":
            await pilot.press(character if character != " " else "space")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen) and plan.request.goal != goal)


async def test_a_calibrated_plan_is_made_on_the_quantize_screen(tmp_path: Path) -> None:
    from tests.tui.test_tui_snapshots import write_tiny_llama

    model = write_tiny_llama(tmp_path / "tiny-llama")
    app = create_app(model=str(model), gpu="H100", hardware=fixed_hardware(), hf_cache=tmp_path / "no-hub")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: app.selection.model is not None)
        await pilot.press("3")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        plan = app.screen
        assert isinstance(plan, PlanScreen) and plan.recommendation is not None
        methods = [candidate.method for candidate in plan.recommendation.candidates]
        for _ in range(methods.index("nvfp4")):
            await pilot.press("down")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, QuantizeScreen))
        assert app.selection.candidate is not None and app.selection.candidate.method == "nvfp4"
        # W4A4 NVFP4 is made through llm-compressor: the screen offers it with its dry-run cost.
        assert "Quantize tiny-llama with nvfp4" in screen_text(app, "#quantize-info")
        await wait_for(pilot, lambda: "estimating" not in screen_text(app, "#quantize-cost"))
        cost = screen_text(app, "#quantize-cost")
        assert "Needs (dry run): " in cost and "cannot tell" not in cost
        assert app.running_work() == [] and isinstance(app.screen, QuantizeScreen)
