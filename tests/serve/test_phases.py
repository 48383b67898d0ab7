"""The compact start-up log: vLLM's log lines reduced to one line per phase and the root errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.serve.phases import PhaseLog, phase_of

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.mark.parametrize(
    ("message", "phase"),
    [
        ("Initializing a V1 LLM engine (v0.32.0) with config: model='/tmp/m'", "configuring the engine"),
        ("Starting to load model /tmp/lw/tiny-llama...", "loading the weights"),
        ("Loading weights took 0.01 seconds", "weights loaded"),
        ("Model loading took 4.53 GiB memory and 12.3 seconds", "weights loaded"),
        ("CPU KV cache size: 1,048,576 tokens", "KV cache ready"),
        ("init engine (profile, create kv cache, warmup model) took 0.84 s", "engine ready"),
        ("Starting vLLM server on http://127.0.0.1:47867", "starting the API server"),
        ("Application startup complete.", "API server up"),
        ("Using V2 Model Runner", None),
        ("", None),
    ],
)
def test_phase_of(message: str, phase: str | None) -> None:
    assert phase_of(message) == phase


def test_a_real_healthy_start_gives_one_line_per_phase() -> None:
    """log_cpu_ok_eager.log: its milestones (lines 23, 41, 48, 53, 54, 65 and 104), each once, in order."""
    phases = PhaseLog()
    lines = (FIXTURES / "log_cpu_ok_eager.log").read_text(encoding="utf-8").splitlines()
    shown = [compact for compact in map(phases.feed, lines) if compact is not None]
    assert shown == [
        "vLLM: configuring the engine",
        "vLLM: loading the weights",
        "vLLM: weights loaded",
        "vLLM: KV cache ready",
        "vLLM: engine ready",
        "vLLM: starting the API server",
        "vLLM: API server up",
    ]
    assert phases.phase == "API server up"


def test_a_phase_seen_again_is_not_shown_again() -> None:
    phases = PhaseLog()
    assert phases.phase == "starting"
    assert (
        phases.feed("INFO 11-23 10:00:01 [x.py:1] Loading weights took 0.01 seconds")
        == "vLLM: weights loaded"
    )
    assert phases.feed("INFO 11-23 10:00:01 [x.py:1] Model loading took 0.1 GiB memory") is None
    assert phases.phase == "weights loaded"


def test_root_errors_are_shown_and_their_tracebacks_are_not() -> None:
    phases = PhaseLog()
    lines = [
        "(EngineCore pid=1) ERROR 11-23 10:00:00 [core.py:1] Traceback (most recent call last):",
        '(EngineCore pid=1) ERROR 11-23 10:00:00 [core.py:1]   File "/x/core.py", line 1, in run',
        "(EngineCore pid=1) ERROR 11-23 10:00:00 [core.py:1] ValueError: No available memory for the cache blocks.",
        "(EngineCore pid=1) WARNING 11-23 10:00:00 [core.py:1] ValueError: only a warning",
        "ValueError: raw stderr, no level",
    ]
    shown = [compact for compact in map(phases.feed, lines) if compact is not None]
    assert shown == ["vllm: ValueError: No available memory for the cache blocks."]
    assert phases.phase == "starting"
