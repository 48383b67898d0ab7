"""The one byte/duration formatter: binary units, the unit that reads best, dashes for unknowns."""

from __future__ import annotations

import pytest

from engine.units import format_bytes, format_duration, format_gib, format_milliseconds


# Expected texts worked out by hand: 1536 = 1.5 × 1024; 12,582,912 = 12 × 2^20; 85,468,962,816 bytes is
# what NVML reports for an H100-80GB (79.6 × 2^30); 1,099,511,627,776 = 2^40.
@pytest.mark.parametrize(
    ("count", "smallest", "digits", "text"),
    [
        (None, "B", 1, "-"),
        (0, "B", 1, "0 B"),
        (512, "B", 1, "512 B"),
        (1023, "B", 1, "1023 B"),
        (1023.6, "B", 1, "1.0 KiB"),  # 1024 B once rounded: the next unit
        (1024, "B", 1, "1.0 KiB"),
        (1536, "B", 1, "1.5 KiB"),
        (425_000, "B", 1, "415.0 KiB"),
        (1_048_535, "B", 1, "1.0 MiB"),  # 1023.96 KiB rounds to 1024.0: the next unit
        (12_582_912, "B", 1, "12.0 MiB"),
        (1_610_612_736, "B", 1, "1.5 GiB"),
        (85_468_962_816, "B", 1, "79.6 GiB"),
        (1_099_511_627_776, "B", 1, "1.0 TiB"),
        (3 * 1_099_511_627_776 * 1024, "B", 1, "3072.0 TiB"),
        (-1536, "B", 1, "-1.5 KiB"),
        (425_000, "MiB", 1, "0.4 MiB"),  # 425,000 / 1,048,576 = 0.405
        (512, "KiB", 1, "0.5 KiB"),
        (1_610_612_736, "MiB", 1, "1.5 GiB"),
        (4_864_000_000, "MiB", 2, "4.53 GiB"),  # vLLM's "Model loading took 4.53 GiB"
        (12_582_912, "MiB", 2, "12.00 MiB"),
        (1_073_737_000, "B", 2, "1.00 GiB"),  # 1023.9954 MiB rounds to 1024.00: the next unit
        (1_073_000_000, "B", 2, "1023.29 MiB"),
    ],
)
def test_format_bytes(count: float | None, smallest: str, digits: int, text: str) -> None:
    assert format_bytes(count, smallest, digits) == text


@pytest.mark.parametrize(
    ("count", "digits", "text"),
    [(None, 1, "-"), (85_468_962_816, 1, "79.6 GiB"), (536_870_912, 2, "0.50 GiB"), (3 * 2**30, 0, "3 GiB")],
)
def test_format_gib(count: float | None, digits: int, text: str) -> None:
    assert format_gib(count, digits) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0 ms"),
        (0.0004, "0 ms"),
        (0.4, "400 ms"),
        (0.9994, "999 ms"),
        (0.9996, "1.0 s"),  # 1000 ms once rounded: seconds
        (4.25, "4.2 s"),  # round half to even, as Python formats
        (59.94, "59.9 s"),
        (59.96, "1m00s"),  # 60.0 s once rounded: minutes
        (185, "3m05s"),
        (3599.4, "59m59s"),
        (3599.6, "1h00m"),
        (3720, "1h02m"),
        (90_000, "25h00m"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "digits", "text"),
    [(None, 0, "-"), (0.075, 0, "75 ms"), (0.0101, 1, "10.1 ms"), (2.5, 0, "2500 ms")],
)
def test_format_milliseconds(seconds: float | None, digits: int, text: str) -> None:
    assert format_milliseconds(seconds, digits) == text
