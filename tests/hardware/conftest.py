"""Fixtures of the hardware tests: two H100s behind nvidia-ml-py's own module with its NVML calls faked."""

from __future__ import annotations

import dataclasses

import pytest

from tests.hardware.fake_nvml import TWO_H100, FakeNvml


@pytest.fixture
def two_h100(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    return FakeNvml(monkeypatch, [dataclasses.replace(gpu) for gpu in TWO_H100])
