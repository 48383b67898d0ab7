"""Shared pytest fixtures: the demo model the project builds itself."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Give SIGHUP and SIGINT the actions they have in a terminal's foreground job.

    Under ``nohup`` (or any launcher that ignores SIGHUP) and in a shell's background job without job
    control (which ignores SIGINT) every process the tests start inherits the ignored disposition, so
    the tests that hang up or Ctrl-C a real quant-tui would see it live on. A Python handler, unlike
    SIG_IGN, is reset to the default in the children at exec.
    """
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The embedded demo model, built once into quant-tui's cache folder (a few minutes the first time)."""
    from engine.model.demo import ensure_demo_model

    return ensure_demo_model()
