"""The choices the guided flow carries from screen to screen, as one immutable record per step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.hardware.detect import HardwareSnapshot, HardwareTarget
    from engine.model.inspect_model import ModelInfo
    from engine.plan.recommender import Candidate, PlanRequest


@dataclass(frozen=True, slots=True)
class Selection:
    """What the user has picked so far; each screen reads it and replaces it with a new one.

    Attributes:
        hardware: What was detected on this machine (None until detection finishes).
        target: The hardware the plan is for: detected, or from the GPU catalogue.
        model_reference: What the user typed for the model (``demo``, a folder or a repo id).
        model: The inspected model.
        request: The plan knobs (context, concurrency, goal, KV cache dtype, TP size).
        candidate: The recommendation the user chose to make and serve.
        serve_dir: The model folder to serve: the quantized output, or the model itself.
    """

    hardware: HardwareSnapshot | None = None
    target: HardwareTarget | None = None
    model_reference: str = "demo"
    model: ModelInfo | None = None
    request: PlanRequest | None = None
    candidate: Candidate | None = None
    serve_dir: Path | None = None
