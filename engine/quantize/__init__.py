"""Quantization: streaming data-free compressed-tensors conversion, and calibrated methods via llm-compressor."""

from __future__ import annotations

from engine.plan.methods import default_output_dir
from engine.quantize.request import (
    METHODS,
    LayerError,
    QuantizeProgress,
    QuantizeReport,
    QuantizeRequest,
)
from engine.quantize.runner import QuantizeCancelled, preflight, quantize_model

__all__ = [
    "METHODS",
    "LayerError",
    "QuantizeCancelled",
    "QuantizeProgress",
    "QuantizeReport",
    "QuantizeRequest",
    "default_output_dir",
    "preflight",
    "quantize_model",
]
