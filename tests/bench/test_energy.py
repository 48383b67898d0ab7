"""Tests for engine.bench.energy: joules over a window from NVML's energy counters (fake driver), and on this host."""

from __future__ import annotations

from typing import Any

import pytest

from engine.bench.energy import EnergyMeter, EnergyWindow
from engine.hardware.nvml import NVML_OK, NvmlLibrary
from tests.hardware.fake_nvml import FakeGpu, FakeNvml


def test_energy_on_this_host_follows_the_machine() -> None:
    library = NvmlLibrary()
    with EnergyMeter(library) as meter:
        pass
    window = meter.window
    assert window is not None
    if library.status() != NVML_OK:  # a CPU-only host (this one, and CI)
        assert window.joules is None and window.gpus == 0
        assert window.not_available == f"not available: {library.status()}"
    else:  # a GPU host: Volta and newer count energy; an idle instant draws little but not less than 0
        assert window.joules is None or window.joules >= 0


@pytest.mark.parametrize(
    ("counters_mj", "tokens", "joules", "per_token", "per_joule"),
    [
        # Two GPUs: +250 J and +500 J over the window; 1500 tokens -> 0.5 J/token, 2 tokens/J.
        ([(1_000_000, 1_250_000), (2_000_000, 2_500_000)], 1500, 750.0, 0.5, 2.0),
        # One GPU, +12.5 J; 50 tokens -> 0.25 J/token, 4 tokens/J.
        ([(7_000, 19_500)], 50, 12.5, 0.25, 4.0),
        # No token generated: no per-token figure.
        ([(0, 1_000)], 0, 1.0, None, None),
    ],
)
def test_energy_from_the_counters(
    monkeypatch: pytest.MonkeyPatch,
    counters_mj: list[tuple[int, int]],
    tokens: int,
    joules: float,
    per_token: float | None,
    per_joule: float | None,
) -> None:
    fake = FakeNvml(monkeypatch, [FakeGpu() for _ in counters_mj])
    readings = {id(handle): iter(pair) for handle, pair in zip(fake.handles, counters_mj, strict=True)}

    def energy(handle: Any) -> int:
        return next(readings[id(handle)])

    fake.install("nvmlDeviceGetTotalEnergyConsumption", energy)
    with EnergyMeter(NvmlLibrary()) as meter:
        pass
    window = meter.window
    assert window == EnergyWindow(joules, len(counters_mj))
    assert window.joules_per_token(tokens) == (None if per_token is None else pytest.approx(per_token))
    assert window.tokens_per_joule(tokens) == (None if per_joule is None else pytest.approx(per_joule))


def test_a_gpu_without_an_energy_counter_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml(monkeypatch, [FakeGpu()])  # nvmlDeviceGetTotalEnergyConsumption: function not found (pre-Volta)
    with EnergyMeter(NvmlLibrary()) as meter:
        pass
    assert meter.window is not None and meter.window.joules is None and meter.window.gpus == 1
    assert (meter.window.not_available or "").startswith("not available: no GPU reports an energy counter")
