"""placeholder"""

from __future__ import annotations

from tui.screens.base import StepScreen


class QuantizeScreen(StepScreen):
    """placeholder"""

    MODE = "quantize"
