"""End-to-end runs of the app with the real quantizer and a real vLLM server (slow: marked e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Static

from tests.test_tui_flow import fixed_hardware, screen_text, wait_for
from tests.test_tui_snapshots import write_tiny_llama
from tui.app import create_app
from tui.screens.quantize import QuantizeScreen

pytestmark = pytest.mark.e2e
SIZE = (80, 24)


async def test_quantize_screen_makes_the_planned_checkpoint(tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / "tiny-llama")
    app = create_app(model=str(model), gpu="H100", hardware=fixed_hardware(), hf_cache=tmp_path / "no-hub")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: app.selection.model is not None, timeout=60)
        await pilot.press("3")
        await pilot.pause()
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, QuantizeScreen))
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
        assert "quantizing" in str(
            app.screen.query_one("#quantize-figures", Static).content
        ) or "done" in str(app.screen.query_one("#quantize-figures", Static).content)
        assert app.quantize_finished.is_set() and app.running_work() == []
        assert "quantize" in app.done_steps
