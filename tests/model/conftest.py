"""Fixtures of the model tests: one child Python with vLLM imported, shared by every check against vLLM's modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.model.vllm_meta_build import VllmMetaBuild


@pytest.fixture(scope="session")
def vllm_meta_build() -> Iterator[VllmMetaBuild]:
    """vLLM's own modules built on the meta device, in one child started at the first test that asks."""
    build = VllmMetaBuild()
    yield build
    build.close()
