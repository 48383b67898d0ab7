"""What the method registry records of a calibrated (llm-compressor) method: how it calibrates, its time constants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# How llm-compressor calibrates an ``llm-compressor`` method (the worker's ``recipe_for``):
#   gptq              GPTQ on the original weights;
#   smoothquant-gptq  SmoothQuant moves activation outliers into the weights, then GPTQ;
#   awq               AWQ's scale search rescales the weights, then round-to-nearest;
#   observers         round-to-nearest weights, activation scales measured on the samples.
Calibration = Literal["gptq", "smoothquant-gptq", "awq", "observers"]


@dataclass(frozen=True, slots=True)
class MethodTime:
    """One calibrated method's terms in ``engine.quantize.calibrated_cost``'s time model (see its docstring).

    Attributes:
        layer_seconds: seconds per decoder layer, whatever its size (llm-compressor's per-layer steps).
        token_passes: how many times the calibration tokens go through every Linear, relative to
            calibrate-then-propagate (AWQ's scale search runs them over again).
        solve_seconds_per_flop: seconds per ``rows * in_features**2`` of GPTQ's solve (0 without GPTQ).
        finish_seconds: fixed seconds to compress on save (and for plain GPTQ to check layer errors).
        finish_seconds_per_param: the same per quantized Linear parameter.
    """

    layer_seconds: float
    token_passes: float
    solve_seconds_per_flop: float
    finish_seconds: float
    finish_seconds_per_param: float
