"""placeholder"""

from __future__ import annotations

from tui.screens.base import StepScreen


class ServeScreen(StepScreen):
    """placeholder"""

    MODE = "serve"
