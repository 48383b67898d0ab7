"""Tests for engine.bench.result: a saved result is valid JSON, whatever figures a failed variant has."""

from __future__ import annotations

import json
import math
from pathlib import Path

from engine.bench.result import save_result


def test_a_failed_variant_with_infinite_figures_is_saved_as_nulls(tmp_path: Path) -> None:
    # A variant whose server never started has no rate: inf/NaN become null (JSON has no inf).
    path = save_result(
        {"request_throughput": math.inf, "rows": [{"ttft": math.nan, "ok": 1.5}]}, tmp_path / "r.json"
    )
    assert json.loads(path.read_text()) == {"request_throughput": None, "rows": [{"ttft": None, "ok": 1.5}]}
