"""The error type the engine raises for bad input, carrying a one-line, actionable message."""

from __future__ import annotations


class QuantTuiError(Exception):
    """A problem the user can fix; ``str(error)`` is one line that says what to do."""


class ModelError(QuantTuiError):
    """The model folder, config or weights cannot be used."""


class HardwareError(QuantTuiError):
    """A GPU name or count is not understood."""
