"""The telemetry's error: a poller cannot be set up as asked, or an export cannot be written."""

from __future__ import annotations

from engine.errors import QuantTuiError

__all__ = ["TelemetryError"]


class TelemetryError(QuantTuiError):
    """The telemetry cannot work as asked (bad interval or history size, an export that cannot be written)."""
