"""Turns what the user typed for --model (a folder, a cached Hugging Face repo id or 'demo') into a folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import ModelError

if TYPE_CHECKING:
    from engine.model.demo import DemoBuildProgress

DEMO = "demo"


@dataclass(frozen=True, slots=True)
class CachedModel:
    """A model repository found in the local Hugging Face cache."""

    repo_id: str
    path: Path
    size_bytes: int


def resolve_model(
    reference: str,
    cache_dir: Path | None = None,
    on_demo_progress: Callable[[DemoBuildProgress], None] | None = None,
) -> Path:
    """Finds the model folder the user means, never downloading anything.

    Args:
        reference: ``demo``, a path to a model folder, or a repo id (``org/name``) already present
            in the Hugging Face cache.
        cache_dir: the Hugging Face hub cache to look in (default: huggingface_hub's own).
        on_demo_progress: progress callback for the first-time build of the demo model.

    Raises:
        ModelError: nothing usable by that name; the message says what to do.
    """
    if reference == DEMO:
        from engine.model.demo import ensure_demo_model

        return ensure_demo_model(progress=on_demo_progress)
    path = Path(reference).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelError(f"{reference} is a file; pass the model's folder (the one holding config.json)")
    if _looks_like_repo_id(reference):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(snapshot_download(reference, local_files_only=True, cache_dir=cache_dir))
        except (LocalEntryNotFoundError, OSError, ValueError):
            raise ModelError(
                f"'{reference}' is neither a folder nor a model in the local Hugging Face cache; "
                f"download it first (hf download {reference}) or pass a folder"
            ) from None
    raise ModelError(f"model folder {reference} does not exist; pass a Hugging Face model folder or 'demo'")


def _looks_like_repo_id(reference: str) -> bool:
    parts = reference.split("/")
    return len(parts) == 2 and all(parts) and not reference.startswith((".", "~"))


def list_cached_models(cache_dir: Path | None = None) -> list[CachedModel]:
    """Lists the model repos in the local Hugging Face cache that have a config.json, largest first."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except (CacheNotFound, OSError):
        return []
    found = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            if (revision.snapshot_path / "config.json").is_file():
                found.append(CachedModel(repo.repo_id, revision.snapshot_path, repo.size_on_disk))
                break
    return sorted(found, key=lambda model: model.size_bytes, reverse=True)
