"""Turns what the user typed for --model (a folder, a GGUF file, a cached Hugging Face repo id or 'demo') into a path."""

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
    """Finds the model folder (or GGUF file) the user means, never downloading anything.

    Args:
        reference: ``demo``, a path to a model folder or a ``.gguf`` file, or a repo id (``org/name``)
            already present in the Hugging Face cache; ``org/name:Q4_K_M`` picks a GGUF repo's file
            of that type, as vLLM reads it.
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
    if path.is_file() and path.suffix == ".gguf":  # a cache snapshot's link keeps its name; its blob has none
        return path.absolute()
    if path.exists():
        raise ModelError(
            f"{reference} is a file; pass the model's folder (the one holding config.json) or a .gguf file"
        )
    repo, _, file_type = reference.partition(":")
    if _looks_like_repo_id(repo):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            folder = Path(snapshot_download(repo, local_files_only=True, cache_dir=cache_dir))
        except (LocalEntryNotFoundError, OSError, ValueError):
            raise ModelError(
                f"'{repo}' is neither a folder nor a model in the local Hugging Face cache; "
                f"download it first (hf download {repo}) or pass a folder"
            ) from None
        if file_type:
            from engine.model.gguf_file import gguf_file_of_type

            return gguf_file_of_type(folder, file_type)
        return folder
    raise ModelError(f"model folder {reference} does not exist; pass a Hugging Face model folder or 'demo'")


def _looks_like_repo_id(reference: str) -> bool:
    parts = reference.split("/")
    return len(parts) == 2 and all(parts) and not reference.startswith((".", "~"))


def list_cached_models(cache_dir: Path | None = None) -> list[CachedModel]:
    """Lists the model repos in the local Hugging Face cache with a config.json or a GGUF file, largest first."""
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
            snapshot = revision.snapshot_path
            if (snapshot / "config.json").is_file() or any(snapshot.rglob("*.gguf")):
                found.append(CachedModel(repo.repo_id, snapshot, repo.size_on_disk))
                break
    return sorted(found, key=lambda model: model.size_bytes, reverse=True)
