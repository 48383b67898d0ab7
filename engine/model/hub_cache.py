"""Where a path sits in the local Hugging Face cache: the repo a snapshot folder belongs to."""

from __future__ import annotations

from pathlib import Path


def cached_repo_id(path: Path) -> str | None:
    """``org/name`` when ``path`` lies in a Hugging Face cache snapshot (``models--org--name/snapshots/…``)."""
    parts = path.parts
    if "snapshots" in parts and parts[parts.index("snapshots") - 1].startswith("models--"):
        return parts[parts.index("snapshots") - 1].removeprefix("models--").replace("--", "/", 1)
    return None
