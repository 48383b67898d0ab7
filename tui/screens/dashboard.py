"""placeholder"""

from __future__ import annotations

from tui.screens.base import StepScreen


class DashboardScreen(StepScreen):
    """placeholder"""

    MODE = "dashboard"
