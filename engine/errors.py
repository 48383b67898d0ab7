"""The error type the engine raises for bad input: a one-line message with its cause and its fix."""

from __future__ import annotations


class QuantTuiError(Exception):
    """A problem the user can fix; ``str(error)`` is one line that says what went wrong and what to do.

    Attributes:
        cause: what went wrong.
        fix: what to do about it (empty when the cause says it all).
    """

    def __init__(self, message: str, fix: str | None = None) -> None:
        """Either ``QuantTuiError(cause, fix)`` or one line ``"cause; fix"`` (the form most raises use).

        Args:
            message: the cause, or the whole line ``"cause; fix"`` when ``fix`` is not given.
            fix: what to do; given, the line becomes ``"cause; fix"``.
        """
        if fix is None:
            cause, _, fix = message.partition("; ")
        else:
            cause = message
        self.cause = cause.strip()
        self.fix = fix.strip()
        super().__init__(f"{self.cause}; {self.fix}" if self.fix else self.cause)


class ModelError(QuantTuiError):
    """The model folder, config or weights cannot be used."""


class HardwareError(QuantTuiError):
    """A GPU name or count is not understood."""
