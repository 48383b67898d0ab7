"""The planner tests' shared models: Llama-3.1-8B and Llama-3.1-70B read from their published configs."""

from __future__ import annotations

import pytest

from engine.model.inspect_model import ModelInfo
from tests.plan.model_configs import model_from_config


@pytest.fixture(scope="session")
def llama8b(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    """Llama-3.1-8B (tests/fixtures/configs/llama-3.1-8b.json): 32 layers, 8 KV heads, 128,256 tokens."""
    return model_from_config(tmp_path_factory.mktemp("llama-3.1-8b"), "llama-3.1-8b")


@pytest.fixture(scope="session")
def llama70b(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    """Llama-3.1-70B (tests/fixtures/configs/llama-3.1-70b.json): 80 layers, 8 KV heads, 128,256 tokens."""
    return model_from_config(tmp_path_factory.mktemp("llama-3.1-70b"), "llama-3.1-70b")
