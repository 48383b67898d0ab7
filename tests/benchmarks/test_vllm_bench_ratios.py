"""benchmarks/vllm_bench_ratios.py: tolerances, server-referenced ratios and the verdict, on hand-worked rounds."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from tests.benchmarks.scripts import load_script


@pytest.fixture(scope="module")
def ratios() -> ModuleType:
    return load_script("vllm_bench_ratios")


@pytest.mark.parametrize(
    ("key", "ours", "theirs", "within"),
    [
        ("output_throughput", 110.0, 100.0, True),  # exactly 10 % off
        ("output_throughput", 110.1, 100.0, False),
        ("median_tpot_ms", 9.0, 10.0, True),
        ("median_ttft_ms", 8.9, 10.0, False),
    ],
)
def test_within_tolerance_is_ten_percent_of_vllm_figure(
    ratios: ModuleType, key: str, ours: float, theirs: float, within: bool
) -> None:
    assert ratios.within_tolerance(key, ours, theirs) is within


@pytest.mark.parametrize(
    ("key", "ours", "theirs", "expected"),
    [
        # TPOT 8.8 vs 8.0 (1.10) while the server's own ITL was 11 vs 10 ms (1.10): the same measurement.
        (
            "median_tpot_ms",
            {"median_tpot_ms": 8.8, "server_itl_ms": 11.0},
            {"median_tpot_ms": 8.0, "server_itl_ms": 10.0},
            1.0,
        ),
        # Throughput moves against ITL: 450 vs 500 tok/s (0.9) on a server 10 % slower (ITL 11 vs 10) -> 0.99.
        (
            "output_throughput",
            {"output_throughput": 450.0, "server_itl_ms": 11.0},
            {"output_throughput": 500.0, "server_itl_ms": 10.0},
            0.99,
        ),
        # TTFT is referred to the server's TTFT: 40 vs 32 ms (1.25) with server TTFT 30 vs 30 -> 1.25.
        (
            "median_ttft_ms",
            {"median_ttft_ms": 40.0, "server_ttft_ms": 30.0},
            {"median_ttft_ms": 32.0, "server_ttft_ms": 30.0},
            1.25,
        ),
    ],
)
def test_referenced_ratio_takes_the_server_speed_out(
    ratios: ModuleType, key: str, ours: dict[str, Any], theirs: dict[str, Any], expected: float
) -> None:
    assert ratios.referenced_ratio(key, ours, theirs) == pytest.approx(expected)


def test_referenced_ratio_without_server_figures_is_none(ratios: ModuleType) -> None:
    assert ratios.referenced_ratio("median_tpot_ms", {"median_tpot_ms": 8.0}, {"median_tpot_ms": 8.0}) is None


def _run(
    tok_s: float, tpot: float, ttft: float, itl_server: float, ttft_server: float, **flags: bool
) -> dict[str, Any]:
    return {
        "output_throughput": tok_s,
        "median_tpot_ms": tpot,
        "median_ttft_ms": ttft,
        "median_itl_ms": tpot,
        "median_e2el_ms": ttft + 63 * tpot,
        "server_itl_ms": itl_server,
        "server_ttft_ms": ttft_server,
        "starved": flags.get("starved", False),
        "busy": flags.get("busy", False),
    }


def test_report_agrees_on_calm_rounds_and_leaves_busy_ones_out(
    ratios: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = {
        # Round 1 is busy and 30 % off; rounds 2-4 agree within 5 %.
        "quant-tui bench": [
            _run(300.0, 12.0, 60.0, 8.0, 30.0, busy=True),
            _run(480.0, 8.0, 35.0, 8.0, 30.0),
            _run(470.0, 8.2, 36.0, 8.0, 30.0),
            _run(490.0, 7.9, 34.0, 8.0, 30.0),
        ],
        "vllm bench serve": [
            _run(470.0, 8.0, 35.0, 8.0, 30.0),
            _run(475.0, 8.1, 35.5, 8.0, 30.0),
            _run(480.0, 8.0, 35.0, 8.0, 30.0),
            _run(470.0, 8.0, 35.0, 8.0, 30.0),
        ],
    }
    assert ratios.report(runs, wanted=3) is True
    out = capsys.readouterr().out
    assert "calm rounds (neither client starved, box not busy): 2, 3, 4" in out
    # Throughput ratios of rounds 2-4: 480/475 = 1.0105, 470/480 = 0.979, 490/470 = 1.043; median 1.011.
    assert "output tok/s     plain 1.011" in out


def test_report_fails_when_too_few_rounds_were_calm(
    ratios: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    calm = _run(480.0, 8.0, 35.0, 8.0, 30.0)
    starved = _run(480.0, 8.0, 35.0, 8.0, 30.0, starved=True)
    runs = {"quant-tui bench": [calm, starved], "vllm bench serve": [calm, calm]}
    assert ratios.report(runs, wanted=3) is False
    assert "fewer than the 3 asked" in capsys.readouterr().out
