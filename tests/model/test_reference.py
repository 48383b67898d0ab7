"""Tests for engine.model.reference: a --model reference resolves to a folder, a cached repo's snapshot, or one error line."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ModelError
from engine.model.inspect_model import inspect_model
from engine.model.reference import resolve_model
from tests.tui.test_tui_snapshots import write_tiny_llama


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("/nonexistent/model", "does not exist"),
        ("nobody/not-cached-model", "local Hugging Face cache"),
    ],
)
def test_resolve_model_refuses_unknown_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: str, message: str
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=message):
        resolve_model(reference, cache_dir=tmp_path / "hub")


def test_resolve_model_finds_a_cached_repo(tmp_path: Path) -> None:
    """A repo laid out the way huggingface_hub caches it resolves to its snapshot, offline."""
    hub = tmp_path / "hub"
    repo = hub / "models--acme--tiny-llama"
    snapshot = repo / "snapshots" / ("a" * 40)
    write_tiny_llama(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    resolved = resolve_model("acme/tiny-llama", cache_dir=hub)
    assert resolved == snapshot
    assert inspect_model(resolved).name == "tiny-llama"


def test_resolve_model_refuses_a_file(tmp_path: Path) -> None:
    file = tmp_path / "config.json"
    file.write_text("{}")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model(str(file))
