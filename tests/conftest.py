"""Shared pytest fixtures: the demo model the project builds itself."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Give SIGHUP its default action, as a terminal session does.

    Under ``nohup`` (or any launcher that ignores SIGHUP) every process the tests start inherits the
    ignored disposition, so the tests that hang up a real quant-tui (an SSH drop) would see it live on.
    """
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The embedded demo model, built once into quant-tui's cache folder (a few minutes the first time)."""
    from engine.model.demo import ensure_demo_model

    return ensure_demo_model()
