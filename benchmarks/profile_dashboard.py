"""The real `quant-tui monitor` dashboard against a fake busy vLLM ``/metrics``: its CPU use, optionally under cProfile.

No vLLM is started (no heavy lock needed): a local HTTP server (``tests/telemetry/fake_metrics.py``)
answers each poll with a captured vLLM 0.32 ``/metrics`` page whose figures move as under load
(counters grow, gauges change, latency histograms take new observations), so every graph changes
each tick, the dashboard's worst case. The dashboard runs in tmux at 120×40, as in the soak.

Usage:
    .venv/bin/python benchmarks/profile_dashboard.py --seconds 60
    .venv/bin/python benchmarks/profile_dashboard.py --seconds 60 --profile /tmp/dashboard.prof
"""

from __future__ import annotations

import argparse
import random
import re
import shlex
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.tmux_pane import quit_tmux, start_in_tmux  # noqa: E402
from tests.telemetry.fake_metrics import fake_metrics_endpoint, fixture_text  # noqa: E402

SESSION = "quant-tui-profile"
_SAMPLE = re.compile(r"^(?P<name>vllm:[a-z_]+)(?P<labels>\{[^}]*\})? (?P<value>\S+)$")
_LE = re.compile(r'le="([^"]+)"')
_HISTOGRAMS = (
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
)
# Gauges walk between these bounds, at most this much a tick (a closed-loop load of 4 users).
_GAUGES = {
    "vllm:num_requests_running": (2.0, 4.0, 1.0),
    "vllm:num_requests_waiting": (0.0, 2.0, 1.0),
    "vllm:kv_cache_usage_perc": (0.05, 0.6, 0.05),
}
# Counters grow by a random amount in these bounds each tick.
_COUNTERS = {
    "vllm:prompt_tokens_total": (200, 320),
    "vllm:generation_tokens_total": (100, 160),
    "vllm:prefix_cache_queries_total": (200, 320),
    "vllm:prefix_cache_hits_total": (0, 64),
    "vllm:num_preemptions_total": (0, 0),
}
# Typical seconds of each histogram's observations (log-normal around them).
_TYPICAL_S = {_HISTOGRAMS[0]: 0.05, _HISTOGRAMS[1]: 0.02, _HISTOGRAMS[2]: 1.0}


def busy_bodies(ticks: int, seed: int = 0) -> list[str]:
    """``ticks`` successive ``/metrics`` pages of a server under load, from the captured vLLM 0.32 page."""
    rng = random.Random(seed)
    lines = fixture_text("v032_under_load").splitlines()
    counters = {name: 0.0 for name in _COUNTERS}
    success = 0.0
    observations: dict[str, list[float]] = {name: [] for name in _HISTOGRAMS}
    gauges = {name: low for name, (low, _, _) in _GAUGES.items()}
    bodies = []
    for _ in range(ticks):
        for name in counters:
            low, high = _COUNTERS[name]
            counters[name] += rng.randint(low, high)
        success += rng.randint(1, 4)
        for name, seen in observations.items():
            seen.extend(rng.lognormvariate(0, 0.3) * _TYPICAL_S[name] for _ in range(rng.randint(8, 24)))
        for name, (bottom, top, step) in _GAUGES.items():
            gauges[name] = min(top, max(bottom, gauges[name] + rng.choice((-step, 0.0, step))))
        out = []
        for line in lines:
            match = _SAMPLE.match(line)
            if match is None:
                out.append(line)
                continue
            name, labels, value = match["name"], match["labels"] or "", float(match["value"])
            if name in counters:
                value = counters[name]
            elif name == "vllm:request_success_total":
                value = success if 'finished_reason="length"' in labels else 0.0
            elif name in gauges:
                value = gauges[name]
            else:
                for base, seen in observations.items():
                    if name == base + "_bucket":
                        bound = float(_LE.search(labels)[1])  # type: ignore[index]
                        value = float(sum(1 for item in seen if item <= bound))
                    elif name == base + "_count":
                        value = float(len(seen))
                    elif name == base + "_sum":
                        value = sum(seen)
            out.append(f"{name}{labels} {value!r}")
        bodies.append("\n".join(out) + "\n")
    return bodies


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _thread_seconds(process: psutil.Process) -> dict[int, float]:
    return {thread.id: thread.user_time + thread.system_time for thread in process.threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long CPU is measured (60)")
    parser.add_argument("--interval", type=float, default=1.0, help="the dashboard's poll interval in s (1)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the measurement (5)")
    parser.add_argument(
        "--profile", type=Path, default=None, help="run the dashboard under cProfile, write here"
    )
    parser.add_argument("--idle", action="store_true", help="serve one unchanging page (an idle server)")
    args = parser.parse_args()

    ticks = int((args.seconds + args.warmup + 30) / args.interval) + 10
    bodies = [fixture_text("v032_idle")] if args.idle else busy_bodies(ticks)
    with fake_metrics_endpoint() as (endpoint, url):
        endpoint.bodies = bodies
        argv = [sys.executable]
        if args.profile is not None:
            argv += ["-m", "cProfile", "-o", str(args.profile)]
        argv += ["-m", "tui.cli", "monitor", url, "--interval", f"{args.interval:g}"]
        command = f"cd {shlex.quote(str(REPO))} && exec {shlex.join(argv)}"
        app = start_in_tmux(SESSION, command)
        try:
            time.sleep(args.warmup)
            polls_before, cpu_before, started = endpoint.requests, _cpu_seconds(app), time.monotonic()
            threads_before = _thread_seconds(app)
            time.sleep(args.seconds)
            elapsed = time.monotonic() - started
            cpu = 100 * (_cpu_seconds(app) - cpu_before) / elapsed
            threads = {
                tid: 100 * (seconds - threads_before.get(tid, 0.0)) / elapsed
                for tid, seconds in _thread_seconds(app).items()
            }
            polls = endpoint.requests - polls_before
            rss = app.memory_info().rss / 2**20
        finally:
            # cProfile writes its file as the app ends: wait for that.
            quit_tmux(SESSION, app, wait_s=20 if args.profile is not None else 0)
    kind = "idle" if args.idle else "busy"
    print(
        f"dashboard vs fake {kind} server, {args.interval:g} s polls: {cpu:.2f} % of one core over "
        f"{args.seconds:g} s ({polls} polls), RSS {rss:.1f} MiB"
        + (" (under cProfile: CPU inflated)" if args.profile is not None else "")
    )
    main_thread = threads.pop(app.pid, 0.0)
    others = ", ".join(f"{share:.2f}" for share in sorted(threads.values(), reverse=True) if share >= 0.01)
    print(f"  main thread {main_thread:.2f} %, other threads {others or '-'} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
