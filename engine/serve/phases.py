"""The compact start-up log: vLLM's log lines reduced to its phases and its root errors (CLI and app alike)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from engine.serve.failure_diagnosis import is_root_exception
from engine.serve.log_line import strip_log_prefix

# What the status line says while the server starts ("starting" before any milestone).
Phase = Literal[
    "starting",
    "configuring the engine",
    "loading the weights",
    "weights loaded",
    "compiling",
    "allocating the KV cache",
    "KV cache ready",
    "engine ready",
    "starting the API server",
    "API server up",
]

# Start-up milestones worth a line in the compact log, and what the status line says meanwhile.
PHASES: tuple[tuple[str, Phase], ...] = (
    ("Initializing a V1 LLM engine", "configuring the engine"),
    ("Starting to load model", "loading the weights"),
    ("Loading weights took", "weights loaded"),
    ("Model loading took", "weights loaded"),
    ("Warming up model", "compiling"),
    ("KV cache for", "allocating the KV cache"),
    ("KV cache size", "KV cache ready"),
    ("init engine", "engine ready"),
    ("Starting vLLM", "starting the API server"),
    ("Application startup complete", "API server up"),
)


def phase_of(message: str) -> Phase | None:
    """The start-up phase a log message marks, or None."""
    return next((phase for needle, phase in PHASES if needle in message), None)


@dataclass
class PhaseLog:
    """Follows a server log and says which lines belong in the compact log.

    Attributes:
        phase: the latest phase seen ("starting" before any).
    """

    phase: Phase = "starting"
    _seen: list[str] = field(default_factory=list)

    def feed(self, line: str) -> str | None:
        """Takes one raw log line; returns the compact line to show for it, or None."""
        level, message = strip_log_prefix(line)
        phase = phase_of(message)
        shown: str | None = None
        if phase is not None and phase != self.phase:
            shown = f"vLLM: {phase}"
        elif level in ("ERROR", "CRITICAL") and is_root_exception(message):
            shown = f"vllm: {message[:200]}"  # the exception itself, not its traceback
        if phase is not None:
            self.phase = phase
        return shown
