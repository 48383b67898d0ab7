"""PathSuggester: completes a folder path as it is typed in an Input, from what exists on disk."""

from __future__ import annotations

import os

from textual.suggester import Suggester


class PathSuggester(Suggester):
    """Suggests the first existing folder that starts with what was typed (``~`` expanded)."""

    def __init__(self) -> None:
        """Creates the suggester (no caching: the disk can change while the app runs)."""
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        """The typed text completed to a folder name, or None.

        Args:
            value: What is in the input.
        """
        if not value or not (value.startswith(("/", "~", "."))):
            return None
        expanded = os.path.expanduser(value)
        folder, prefix = os.path.split(expanded)
        try:
            names = sorted(entry.name for entry in os.scandir(folder or ".") if entry.is_dir())
        except OSError:
            return None
        for name in names:
            if name.startswith(prefix) and name != prefix and not name.startswith("."):
                return value + name[len(prefix) :] + "/"
        return None
