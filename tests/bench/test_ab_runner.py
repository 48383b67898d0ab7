"""engine/bench/ab_runner.py: what run_bench refuses before it quantizes or serves anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.bench.ab_result import BenchError, BenchRequest
from engine.bench.ab_runner import run_bench
from engine.bench.load_spec import LoadSpec
from engine.errors import QuantTuiError


def test_bench_needs_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"config\.json"):
        run_bench(BenchRequest(model=tmp_path))


def test_bench_rejects_a_bad_load(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(QuantTuiError, match="concurrency"):
        run_bench(BenchRequest(model=tmp_path, load=LoadSpec(concurrency=0)))
