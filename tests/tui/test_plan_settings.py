"""Pilot tests: the Plan screen's options dialog re-plans, the command shown follows, and the Serve screen runs that plan."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from engine.errors import QuantTuiError
from engine.plan.plan_request import PlanRequest
from tests.tui.plan_steps import serve_as_is
from tests.tui.test_tui_flow import SIZE, fixed_hardware, screen_text, wait_for
from tests.tui.test_tui_snapshots import write_tiny_llama
from tui.app import QuantTuiApp, create_app
from tui.cli.plan_options import PLAN_OPTIONS, add_plan_options, plan_request
from tui.screens.plan import PlanScreen, serve_command
from tui.screens.plan_settings import OptionValidator, PlanSettingsDialog, settings_summary
from tui.screens.serve import serve_folder


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return write_tiny_llama(tmp_path / "tiny-llama")


async def _open_plan(pilot: Pilot[None], app: QuantTuiApp) -> PlanScreen:
    await pilot.press("2")
    await wait_for(pilot, lambda: app.selection.model is not None, timeout=60)
    await pilot.press("3")
    await wait_for(
        pilot, lambda: isinstance(app.screen, PlanScreen) and app.screen.recommendation is not None
    )
    assert isinstance(app.screen, PlanScreen)
    return app.screen


async def _type(pilot: Pilot[None], app: QuantTuiApp, field: str, text: str) -> None:
    """Replaces a field's text by typing, as a user does."""
    widget = app.screen.query_one(f"#option-{field}", Input)
    widget.focus()
    widget.value = ""
    await pilot.pause()
    for character in text:
        await pilot.press(character)


async def _set_options(pilot: Pilot[None], app: QuantTuiApp, **fields: str) -> None:
    await pilot.press("o")
    await wait_for(pilot, lambda: isinstance(app.screen, PlanSettingsDialog), timeout=10)
    for field, text in fields.items():
        await _type(pilot, app, field, text)
    await pilot.press("enter")
    await pilot.pause()


@pytest.mark.parametrize("gpu", [None, "H100"], ids=["this CPU", "catalogued H100"])
async def test_options_re_plan_and_the_command_follows(tiny_model: Path, gpu: str | None) -> None:
    app = create_app(model=str(tiny_model), gpu=gpu, hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        plan = await _open_plan(pilot, app)
        before = plan.highlighted
        assert before is not None and "--max-num-seqs" not in serve_command(before)
        options = {"max_num_seqs": "64", "max_model_len": "512", "dtype": "float32"}
        if gpu:
            options["gpu_memory_utilization"] = "0.8"
        await _set_options(pilot, app, **options)
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), timeout=10)
        assert plan.request.max_num_seqs == 64 and plan.request.max_model_len == 512
        after = plan.highlighted
        assert after is not None
        command = serve_command(after)
        for flag in ("--max-num-seqs 64", "--max-model-len 512", "--dtype float32"):
            assert flag in command
        assert ("--gpu-memory-utilization 0.8" in command) is (gpu is not None)
        # float32 re-plans: twice the unquantized bytes, not only a flag on the command line.
        assert after.weights.unquantized == 2 * before.weights.unquantized
        shown = screen_text(app, "#plan-text")
        assert "--max-num-seqs 64" in shown and "Options (o):" in shown
        assert settings_summary(plan.request) in shown


async def test_a_bad_value_is_refused_in_one_line_and_escape_keeps_the_plan(tiny_model: Path) -> None:
    app = create_app(model=str(tiny_model), hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        plan = await _open_plan(pilot, app)
        request = plan.request
        await _set_options(pilot, app, gpu_memory_utilization="1.5")
        assert isinstance(app.screen, PlanSettingsDialog)  # not applied
        error = screen_text(app, "#settings-error")
        assert "(0, 1]" in error and error.strip().count("\n") == 0
        assert not app.screen.query_one("#option-gpu_memory_utilization", Input).is_valid
        await _type(pilot, app, "gpu_memory_utilization", "0.9")
        await _type(pilot, app, "kv_cache_dtype", "fp4")
        await pilot.press("enter")
        await pilot.pause()
        assert "fp8_e4m3" in screen_text(app, "#settings-error")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), timeout=10)
        assert plan.request == request


# (option, bad text, the one line both the CLI and the dialog give)
BAD_VALUES = [
    ("--kv-cache-dtype", "fp4", "unknown KV cache dtype 'fp4'; use one of auto, fp8, fp8_e4m3, fp8_e5m2"),
    ("--dtype", "int4", "unknown --dtype 'int4'; use one of auto, half, float16, bfloat16, float, float32"),
    (
        "--gpu-memory-utilization",
        "1.5",
        "--gpu-memory-utilization is a fraction; use a value in (0, 1], e.g. 0.9, not 1.5",
    ),
    ("--max-num-seqs", "0", "--max-num-seqs must be at least 1, got 0"),
    ("--concurrency", "1.5", "--concurrency expects a whole number, got '1.5'"),
]


@pytest.mark.parametrize(("flag", "text", "message"), BAD_VALUES)
def test_a_bad_value_gets_the_clis_message_in_the_dialog(flag: str, text: str, message: str) -> None:
    option = next(option for option in PLAN_OPTIONS if option.flag == flag)
    result = OptionValidator(option, PlanRequest()).validate(text)
    assert not result.is_valid and result.failure_descriptions == [message]
    parser = argparse.ArgumentParser()
    add_plan_options(parser)
    with pytest.raises(QuantTuiError) as raised:
        plan_request(parser.parse_args([flag, text]))
    assert str(raised.value) == message


async def test_the_serve_screen_runs_the_plan_the_options_made(tiny_model: Path) -> None:
    app = create_app(model=str(tiny_model), hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        plan = await _open_plan(pilot, app)
        await _set_options(pilot, app, max_num_seqs="16", concurrency="300", max_model_len="1024")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), timeout=10)
        chosen, serve = await serve_as_is(pilot, plan)
        folder = serve_folder(app.selection)
        assert folder is not None
        config = serve.server_config(folder)
        assert config == chosen.server
        assert config.command_line() == serve_command(chosen)
        assert "--max-num-seqs 16" in config.command_line()
        assert app.selection.request == PlanRequest(max_model_len=1024, concurrency=300, max_num_seqs=16)
