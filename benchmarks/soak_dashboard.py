"""Soak: the real `quant-tui monitor` dashboard watches a demo server under load; RSS, CPU and request counts.

Runs, all on this machine and on loopback only:
1. ``quant-tui serve --model demo`` (the real CLI) until it prints its URL;
2. ``quant-tui monitor URL`` (the real Textual dashboard) inside tmux at 120×40;
3. a closed-loop load (concurrency 4, 64 prompt / 32 output tokens) for ``--minutes``, bounded in time;
then prints the app's RSS and CPU per minute, RSS growth (last minute ÷ first minute, and from the
moment the dashboard's history of ``--history`` polls is full to the end) and the request count seen
by the client against the server's ``vllm:request_success`` delta.

With the default history (600 polls) at 1 s polls the history fills for the first ten minutes, so its
RSS grows by the size of the history; ``--history 120`` fills it in two minutes and shows whether
anything else grows after that.

Usage (hold the heavy lock; it keeps two cores busy for the whole run):
    flock /tmp/quant-tui-heavy.lock .venv/bin/python benchmarks/soak_dashboard.py --minutes 10
    flock /tmp/quant-tui-heavy.lock .venv/bin/python benchmarks/soak_dashboard.py --minutes 10 --history 120
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.tmux_pane import quit_tmux, start_in_tmux  # noqa: E402
from engine.bench.load_spec import LoadSpec  # noqa: E402
from engine.bench.loadgen import run_load  # noqa: E402
from engine.telemetry.metrics import parse_metrics  # noqa: E402
from engine.telemetry.poller import DEFAULT_HISTORY  # noqa: E402
from tests.quant_tui_command import Output, interrupt, start_quant_tui, wait_serving  # noqa: E402

SESSION = "quant-tui-soak"


def _start_server() -> tuple[subprocess.Popen[str], str]:
    server = start_quant_tui(["serve", "--model", "demo", "--max-model-len", "512", "--enforce-eager"])
    try:
        return server, wait_serving(Output(server))
    except AssertionError as error:
        interrupt(server)
        raise SystemExit(f"soak: the demo server did not start: {error}") from None


def _request_success(url: str) -> float:
    sample = parse_metrics(httpx.get(url + "/metrics", timeout=10).text)
    return sample.counters.get("request_success", 0.0)


def _start_dashboard(
    url: str, interval_s: float, history: int | None, traced: list[str] | None = None
) -> psutil.Process:
    """``quant-tui monitor URL`` in tmux at 120×40; with ``traced``, the tracemalloc wrapper with those options.

    With ``history``, the same command with a history of that many polls.
    """
    command = f"cd {REPO} && exec {sys.executable} -m tui.cli monitor {url} --interval {interval_s:g}"
    if history is not None:
        monitor = [sys.executable, "-c", SHORT_HISTORY_MONITOR, str(history), url, f"{interval_s:g}"]
        command = f"cd {REPO} && exec {shlex.join(monitor)}"
    if traced is not None:
        wrapper = shlex.join([sys.executable, str(REPO / "benchmarks" / "traced_dashboard.py"), url, *traced])
        command = f"cd {REPO} && exec {wrapper} --interval {interval_s:g}"
    return start_in_tmux(SESSION, command, settle_s=3)


# ``quant-tui monitor`` with a history of N polls (argv: N URL INTERVAL), as lean as the real command:
# this script's own imports (httpx, the load generator, the test helpers) would add about 9 MiB of RSS.
SHORT_HISTORY_MONITOR = (
    "import sys; from tui.screens.dashboard import DashboardScreen; "
    "DashboardScreen.HISTORY_TICKS = int(sys.argv[1]); from tui.cli import main; "
    "sys.exit(main(['monitor', sys.argv[2], '--interval', sys.argv[3]]))"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (10)")
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="the dashboard's poll interval in s (1)",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=None,
        help="polls the dashboard's history keeps (its default: 600); RSS growth is also given from the "
        "moment it is full",
    )
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between RSS/CPU samples (5)")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="run the dashboard under tracemalloc and print the top growth sites between the moment its "
        "history is full and the end (slows it: its CPU figures then do not count)",
    )
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        raise SystemExit("soak: needs tmux (apt-get install tmux)")

    server, url = _start_server()
    app: psutil.Process | None = None
    trace_file = Path(tempfile.mkdtemp(prefix="quant-tui-soak-")) / "tracemalloc.txt"
    traced = None
    if args.tracemalloc:
        # The first snapshot once the 600-poll history is full (or half-way, for short runs).
        end_s = args.minutes * 60 - 20
        baseline_s = min(600 * args.interval + 20, end_s / 2)
        traced = [f"--baseline-s={baseline_s:g}", f"--end-s={end_s:g}", f"--out={trace_file}"]
    try:
        app = _start_dashboard(url, args.interval, args.history, traced)
        before = _request_success(url)
        spec = LoadSpec(
            concurrency=4, prompt_tokens=64, output_tokens=32, requests=None, duration_s=args.minutes * 60
        )
        result_box: list[object] = []
        load = threading.Thread(target=lambda: result_box.append(run_load(url, spec)), daemon=True)
        started = time.monotonic()
        load.start()
        samples: list[tuple[float, float, float]] = []  # (elapsed s, RSS MiB, CPU % of one core)
        last_cpu = sum(app.cpu_times()[:2])
        last_at = time.monotonic()
        while load.is_alive():
            load.join(args.sample_s)
            now = time.monotonic()
            cpu = sum(app.cpu_times()[:2])
            samples.append(
                (now - started, app.memory_info().rss / 2**20, 100 * (cpu - last_cpu) / (now - last_at))
            )
            last_cpu, last_at = cpu, now
        time.sleep(2)  # let the server's counters settle after the last request
        after = _request_success(url)
        result = result_box[0]
        # A snapshot of a few hundred thousand traced blocks and their comparison take a while.
        deadline = time.monotonic() + 300
        while args.tracemalloc and not trace_file.is_file() and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        quit_tmux(SESSION, app, wait_s=1)
        interrupt(server)

    print(
        f"soak: {args.minutes:g} min of load, dashboard polling every {args.interval:g} s, sampled every {args.sample_s:g} s"
    )
    print(f"{'minute':>6}  {'RSS MiB':>8}  {'CPU % of a core':>15}")
    by_minute: dict[int, list[tuple[float, float]]] = {}
    for elapsed, rss, cpu in samples:
        by_minute.setdefault(int(elapsed // 60), []).append((rss, cpu))
    for minute, rows in sorted(by_minute.items()):
        print(
            f"{minute + 1:>6}  {statistics.median(r for r, _ in rows):>8.1f}  {statistics.mean(c for _, c in rows):>15.2f}"
        )
    minutes = sorted(by_minute)
    first_rss = statistics.median(r for r, _ in by_minute[minutes[0]])
    last_rss = statistics.median(r for r, _ in by_minute[minutes[-1]])
    print(f"RSS last minute / first minute: {last_rss / first_rss:.3f}")
    # The dashboard started about 3 s before the load; its history is full after that many polls.
    full_s = (args.history or DEFAULT_HISTORY) * args.interval - 3
    after_full = [rss for elapsed, rss, _ in samples if elapsed >= full_s + args.sample_s]
    if len(after_full) >= 2:
        print(
            f"RSS once the {args.history or DEFAULT_HISTORY}-poll history is full (from {full_s:.0f} s): "
            f"{after_full[0]:.1f} -> {after_full[-1]:.1f} MiB, max {max(after_full):.1f}, "
            f"growth {after_full[-1] / after_full[0]:.3f}"
        )
    else:
        print(f"RSS once the history is full: not reached (full after {full_s:.0f} s of load)")
    print(f"CPU mean: {statistics.mean(c for _, _, c in samples):.2f} % of one core")
    ok = result.ok_requests  # type: ignore[attr-defined]
    outcomes = result.outcomes  # type: ignore[attr-defined]
    print(f"client: {ok} completed, outcomes {outcomes}")
    print(f"server vllm:request_success delta: {after - before:.0f}")
    print(f"client completed == server delta: {ok == round(after - before)}")
    if args.tracemalloc:
        print(
            trace_file.read_text(encoding="utf-8")
            if trace_file.is_file()
            else "tracemalloc: no report written"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
