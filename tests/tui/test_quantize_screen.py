"""Pilot tests of the Quantize screen before a run: the dry run's cost, as `quant-tui quantize --dry-run` prints it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.quant_tui_command import QUANT_TUI, REPO
from tests.tui.test_tui_flow import SIZE, fixed_hardware, open_quantize_screen, screen_text, wait_for
from tests.tui.test_tui_snapshots import write_tiny_llama
from tui.app import create_app
from tui.screens.quantize import QuantizeScreen


async def test_the_dry_run_cost_is_shown_before_starting_and_matches_the_cli(tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / "tiny-llama")
    cli = subprocess.run(
        [*QUANT_TUI, "quantize", "--model", str(model), "--method", "fp8", "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    # "  disk         549.2 KiB (free 66.1 GiB)", "  time         about 6 ms", "  fits"
    printed = {
        key: value.strip()
        for key, _, value in (line.strip().partition(" ") for line in cli.stdout.splitlines()[1:])
    }
    app = create_app(model=str(model), gpu="H100", hardware=fixed_hardware(), hf_cache=tmp_path / "no-hub")
    async with app.run_test(size=SIZE) as pilot:
        await open_quantize_screen(pilot)
        screen = app.screen
        assert isinstance(screen, QuantizeScreen)
        await wait_for(pilot, lambda: screen.cost is not None, timeout=60)
        shown = screen_text(app, "#quantize-cost")
        # The output size and the time come from the checkpoint alone: the same in both processes.
        assert shown.startswith("Needs (dry run): peak RAM ")
        disk = printed["disk"].split(" (free")[0]
        assert f"disk {disk} of " in shown
        assert printed["time"] in shown
        assert "fits" in printed and "\nfits; " in shown
        assert app.running_work() == [] and not (tmp_path / "tiny-llama-FP8-Dynamic").exists()


async def test_a_model_quant_tui_does_not_quantize_is_said_so_and_nothing_can_start(tmp_path: Path) -> None:
    from tests.plan.model_configs import write_config

    model = write_config(tmp_path / "gemma-3", "gemma-3-27b-it")  # config-only, multimodal
    app = create_app(model=str(model), gpu="H100", hardware=fixed_hardware(), hf_cache=tmp_path / "no-hub")
    async with app.run_test(size=SIZE) as pilot:
        await open_quantize_screen(pilot)
        screen = app.screen
        assert isinstance(screen, QuantizeScreen)
        assert screen.request() is None
        shown = " ".join(screen_text(app, "#quantize-info").split())
        assert shown.startswith("quant-tui cannot make this checkpoint (gemma-3 is a multimodal model")
        assert "make it with llm-compressor, or serve a published one." in shown
