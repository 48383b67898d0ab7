"""Measure one running server under one load: client figures, the server's own view of the window, reproducibility."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from engine.bench.energy import EnergyMeter
from engine.bench.load_result import LoadProgress
from engine.bench.load_spec import LoadSpec
from engine.bench.loadgen import run_load, served_model_name
from engine.bench.metrics import DEFAULT_PERCENTILES
from engine.bench.result import BenchRun, capture_reproducibility
from engine.bench.server_truth import DEFAULT_INTERVAL_S, ServerSampler
from engine.serve import client as server_client

__all__ = ["measure_server"]


def measure_server(
    url: str,
    spec: LoadSpec,
    api_key: str | None = None,
    label: str | None = None,
    slo_ms: Mapping[str, float] | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    sample_server: bool = True,
    sample_interval_s: float = DEFAULT_INTERVAL_S,
    model_path: Path | None = None,
    server_argv: Sequence[str] | None = None,
    save_detailed: bool = False,
    on_progress: Callable[[LoadProgress], None] | None = None,
    stop_event: threading.Event | None = None,
) -> BenchRun:
    """Runs ``spec`` against the server at ``url`` and returns every figure of the run.

    Args:
        url: The server (``http://host:port``, ``/v1`` or not).
        spec: The load; without ``spec.model`` the server's first model is used.
        api_key: Sent as a Bearer token; never written into the result.
        label: The result's label (default: the model name).
        slo_ms: Goodput bounds (ms) for ``ttft``, ``tpot``, ``e2el``.
        percentiles: Percentiles to report.
        sample_server: Scrape ``/metrics`` before, during and after the run.
        sample_interval_s: Seconds between scrapes during the run; 0 scrapes only before and after.
        model_path: The model folder, for the reproducibility hashes.
        server_argv: The server's command line when quant-tui launched it.
        save_detailed: Keep vLLM's per-request lists in the JSON.
        on_progress: Called after every finished timed request.
        stop_event: Set it to stop early.

    Raises:
        LoadError: Bad load, or the server cannot be asked for its model.
        ServerClientError: Bad URL.
    """
    root = server_client.base_url(url)
    spec.check()
    if spec.model is None:
        spec = replace(spec, model=served_model_name(root, api_key))
    warmup_outcomes: dict[str, int] = {}
    if spec.num_warmups:
        # Warm-ups run before the server's window opens, so its counters see only the timed requests.
        warmup = run_load(
            root,
            replace(spec, requests=spec.num_warmups, duration_s=None, num_warmups=0),
            api_key,
            stop_event=stop_event,
        )
        warmup_outcomes = {name: count for name, count in warmup.outcomes.items() if count}
        spec = replace(spec, num_warmups=0)
    window = None
    with EnergyMeter() as energy:
        if sample_server:
            with ServerSampler(root, api_key, interval_s=sample_interval_s) as sampler:
                result = run_load(root, spec, api_key, on_progress=on_progress, stop_event=stop_event)
            window = sampler.window
        else:
            result = run_load(root, spec, api_key, on_progress=on_progress, stop_event=stop_event)
    result = replace(
        result,
        spec=replace(result.spec, num_warmups=len(warmup_outcomes) and sum(warmup_outcomes.values())),
        warmup_outcomes=warmup_outcomes,
    )
    return BenchRun(
        label=label or result.model,
        base_url=root,
        load=result,
        summary=result.serve_summary(percentiles, slo_ms),
        server=window,
        energy=energy.window,
        reproducibility=capture_reproducibility(root, api_key, result, model_path, server_argv),
        save_detailed=save_detailed,
    )
