"""Shared pytest fixtures: the demo model the project builds itself."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The embedded demo model, built once into quant-tui's cache folder (a few minutes the first time)."""
    from engine.model.demo import ensure_demo_model

    return ensure_demo_model()
