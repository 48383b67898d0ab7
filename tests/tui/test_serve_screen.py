"""The Serve screen's log pane: vLLM's start-up as compact phases, the full log one key (l) away."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Log

from tests.tui.test_tui_flow import fixed_hardware, wait_for
from tui.app import create_app
from tui.screens.serve import ServeScreen

FIXTURE = Path(__file__).parents[1] / "fixtures" / "vllm_cpu_startup_demo.log"


async def test_compact_phases_and_the_full_log_one_key_away() -> None:
    lines = FIXTURE.read_text().splitlines()
    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.selection.target is not None, timeout=30)
        await pilot.press("5")
        await wait_for(pilot, lambda: isinstance(app.screen, ServeScreen))
        serve = app.screen
        assert isinstance(serve, ServeScreen)
        for line in lines:
            serve.post_message(ServeScreen.LogLine(line))
        await pilot.pause(0.3)
        log = serve.query_one("#serve-log", Log)
        compact = [str(log.lines[i]) for i in range(log.line_count)]
        # The demo start-up passes these phases once each, in this order (read off the fixture).
        assert compact[:3] == [
            "vLLM: configuring the engine",
            "vLLM: loading the weights",
            "vLLM: weights loaded",
        ]
        assert "vLLM: KV cache ready" in compact and compact[-1] == "vLLM: API server up"
        assert len(compact) == len(set(compact)) < 15
        await pilot.press("l")
        await pilot.pause(0.2)
        # Every line vLLM wrote (the pane leaves out blank ones).
        assert log.line_count >= len([line for line in lines if line.strip()]) > len(compact)
        assert log.border_title == "vLLM log (all lines)"
        await pilot.press("l")
        await pilot.pause(0.2)
        assert log.line_count == len(compact)
