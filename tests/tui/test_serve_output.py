"""The serve command's compact log: one line per start-up phase and the root errors, over real vLLM logs."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "log_cpu_ok_compiled.log",
            [
                "quant-tui: vLLM: configuring the engine",
                "quant-tui: vLLM: loading the weights",
                "quant-tui: vLLM: weights loaded",
                "quant-tui: vLLM: compiling",
                "quant-tui: vLLM: KV cache ready",
                "quant-tui: vLLM: engine ready",
                "quant-tui: vLLM: starting the API server",
                "quant-tui: vLLM: API server up",
            ],
        ),
        (
            "log_cpu_online_fp8.log",
            [
                "quant-tui: vLLM: configuring the engine",
                "quant-tui: vLLM: loading the weights",
                "vllm: RuntimeError: _C::static_scaled_fp8_quant() expected at most 0 argument(s) but received 4 argument(s). Declaration: _C::static_scaled_fp8_quant() -> ()",
            ],
        ),
    ],
)
def test_compact_log_shows_phases_and_root_errors(fixture: str, expected: list[str]) -> None:
    """Real logs through the non-terminal console: one line per phase, root exceptions, no tracebacks."""
    import io

    from tui.cli.serve_output import ServeConsole

    out = io.StringIO()
    console = ServeConsole(verbose=False, stream=out)
    for line in (Path(__file__).parents[1] / "fixtures" / fixture).read_text().splitlines():
        console.on_log(line)
    assert out.getvalue().splitlines() == expected
