"""Where quant-tui keeps its caches, run logs and the demo model."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Returns quant-tui's cache folder: ``$QUANT_TUI_CACHE``, else ``$XDG_CACHE_HOME/quant-tui``."""
    explicit = os.environ.get("QUANT_TUI_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "quant-tui"
