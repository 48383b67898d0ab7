"""benchmarks/profile_dashboard.py: its fake /metrics pages read as a vLLM server under a steady load."""

from __future__ import annotations

import itertools

from engine.telemetry.derived_metrics import derive
from engine.telemetry.metrics import parse_metrics
from tests.benchmarks.scripts import load_script


def test_busy_pages_move_every_figure_the_dashboard_plots_as_a_loaded_server_would() -> None:
    pages = load_script("profile_dashboard").busy_bodies(4)
    samples = [parse_metrics(page, taken_at=float(tick)) for tick, page in enumerate(pages)]
    for before, after in itertools.pairwise(samples):
        derived = derive(before, after)
        # 100-160 generated and 200-320 prompt tokens a tick, 1-4 requests done, 2-4 running.
        assert derived.generation_tokens_per_s is not None and 100 <= derived.generation_tokens_per_s <= 160
        assert derived.prompt_tokens_per_s is not None and 200 <= derived.prompt_tokens_per_s <= 320
        assert 1 <= after.counters["request_success"] - before.counters["request_success"] <= 4
        assert derived.requests_running is not None and 2 <= derived.requests_running <= 4
        # Observations around 50 ms (TTFT) and 20 ms (ITL): the quantiles land near them.
        assert derived.ttft_p50_s is not None and 0.02 < derived.ttft_p50_s < 0.1
        assert derived.itl_p95_s is not None and 0.01 < derived.itl_p95_s < 0.1
        assert derived.kv_cache_usage is not None and 0.05 <= derived.kv_cache_usage <= 0.6
