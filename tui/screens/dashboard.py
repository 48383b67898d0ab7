"""DashboardScreen: live panels with history plots of a vLLM server, a load generator, poll interval, export."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.message import Message
from textual.widgets import Static

from tui.format import gib, milliseconds, number, percent
from tui.screens.base import StepScreen
from tui.widgets.metric_panel import MetricPanel

if TYPE_CHECKING:
    from engine.bench.loadgen import LoadProgress, LoadResult
    from engine.telemetry.poller import TelemetryPoller, TelemetrySnapshot

INTERVALS = (0.25, 0.5, 1.0, 2.0, 5.0)
# The built-in load: a steady stream of streamed completions until stopped (or ten minutes).
LOAD_CONCURRENCY = 4
LOAD_PROMPT_TOKENS = 128
LOAD_OUTPUT_TOKENS = 128
LOAD_MAX_SECONDS = 600.0

PANELS = (
    ("gen", "Generation tok/s"),
    ("prompt", "Prompt tok/s"),
    ("requests", "Requests run/wait"),
    ("kv", "KV cache used"),
    ("device", "GPU memory / util"),
    ("ttft", "TTFT p50 / p95"),
    ("itl", "Inter-token p50/p95"),
    ("prefix", "Prefix cache hits"),
    ("preempt", "Preemptions"),
)


class DashboardScreen(StepScreen):
    """Step 6 (and ``quant-tui monitor``): what the server does, polled from its ``/metrics``."""

    MODE = "dashboard"
    HELP_TITLE = "6 Dashboard"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "load", "Load on/off", tooltip="Start or stop the built-in load generator"),
        Binding("plus,equals_sign", "interval(-1)", "Faster", tooltip="Poll more often"),
        Binding("minus", "interval(1)", "Slower", tooltip="Poll less often"),
        Binding("e", "export('csv')", "Export CSV", tooltip="Save the run's history as CSV in this folder"),
        Binding(
            "j", "export('json')", "Export JSON", tooltip="Save the run's snapshots as JSON in this folder"
        ),
    ]

    class Tick(Message):
        """The poller took a snapshot; the series are the history up to it."""

        def __init__(
            self,
            snapshot: TelemetrySnapshot,
            series: dict[str, list[float | None]],
            preemptions: list[float | None],
        ) -> None:
            self.snapshot = snapshot
            self.series = series
            self.preemptions = preemptions
            super().__init__()

    class LoadTick(Message):
        """The load generator finished a request."""

        def __init__(self, progress: LoadProgress) -> None:
            self.progress = progress
            super().__init__()

    class LoadDone(Message):
        """The load generator stopped."""

        def __init__(self, result: LoadResult) -> None:
            self.result = result
            super().__init__()

    def __init__(self) -> None:
        """Creates the screen; polling starts once there is a server URL."""
        super().__init__()
        self.poller: TelemetryPoller | None = None
        self.poll_stop = threading.Event()
        self.load_stop: threading.Event | None = None
        self.load_status = "load: off (l starts it)"
        self.poll_status = ""

    def compose_body(self) -> ComposeResult:
        """The status line and the grid of panels."""
        yield Static("", id="dashboard-status")
        with Grid(id="panels"):
            for panel_id, title in PANELS:
                yield MetricPanel(title, id=f"panel-{panel_id}")

    def on_mount(self) -> None:
        """Starts polling when the app knows a server."""
        super().on_mount()
        self.quant_app.background_stops.append(self.poll_stop)
        self.watch(self.quant_app, "server_url", self._server_changed, init=True)

    def on_unmount(self) -> None:
        """Stops the poller and the load with the screen."""
        self.poll_stop.set()
        if self.load_stop is not None:
            self.load_stop.set()

    def _server_changed(self, url: str | None) -> None:
        self.poll_stop.set()
        if url is None:
            self.poll_status = (
                "No server to watch yet: start one on the Serve step (5), or run `quant-tui monitor URL`."
            )
            self._show_status()
            return
        self.poll_stop = threading.Event()
        self.quant_app.background_stops.append(self.poll_stop)
        self.poll_status = f"connecting to {url}…"
        self._show_status()
        self._poll(url, self.poll_stop)

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False, description="Polling the server")
    def _poll(self, url: str, stop: threading.Event) -> None:
        from engine.telemetry.poller import TelemetryPoller

        app = self.quant_app
        poller = TelemetryPoller(
            url,
            interval_s=app.poll_interval,
            api_key=app.api_key,
            server_pid=app.server_pid,
            sample_hardware=app.sample_hardware,
        )
        self.poller = poller

        def on_snapshot(snapshot: TelemetrySnapshot) -> None:
            preemptions = [
                item.metrics.preemptions_per_s if item.metrics is not None else None
                for item in poller.snapshots()
            ]
            self.post_message(self.Tick(snapshot, poller.series(), preemptions))

        with poller:
            poller.run(on_snapshot, stop)

    def on_dashboard_screen_tick(self, message: Tick) -> None:
        """Redraws every panel from the history (only while the dashboard is on screen)."""
        snapshot, series = message.snapshot, message.series
        if not self.is_current:
            return
        metrics = snapshot.metrics
        interval = self.poller.interval_s if self.poller is not None else self.quant_app.poll_interval
        if snapshot.ok:
            self.poll_status = f"watching {snapshot.url}, every {interval:g} s"
        else:
            self.poll_status = f"POLL FAILED: {snapshot.error}"
        self._show_status()

        def panel(panel_id: str) -> MetricPanel:
            return self.query_one(f"#panel-{panel_id}", MetricPanel)

        def value(name: str) -> float | None:
            return getattr(metrics, name) if metrics is not None else None

        panel("gen").show(number(value("generation_tokens_per_s")), series["generation_tokens_per_s"])
        panel("prompt").show(number(value("prompt_tokens_per_s")), series["prompt_tokens_per_s"])
        panel("requests").show(
            f"{number(value('requests_running'), 0)} running, {number(value('requests_waiting'), 0)} wait",
            series["requests_running"],
        )
        capacity = value("kv_cache_capacity_tokens")
        of_tokens = f" of {capacity:,} tok" if capacity else ""
        panel("kv").show(f"{percent(value('kv_cache_usage'))}{of_tokens}", series["kv_cache_usage"])
        device = panel("device")
        if snapshot.gpus:
            device.border_title = "GPU memory / util"
            per_gpu = [
                f"{gpu.index}: {gib(gpu.memory_used_bytes)} {number(gpu.utilization_percent, 0, '%')}"
                for gpu in snapshot.gpus
            ]
            device.show("\n".join(per_gpu), series["gpu_memory_used_bytes"])
        else:
            device.border_title = "Host RAM / CPU"
            host = snapshot.host
            used_ram = host.memory_total_bytes - host.memory_available_bytes if host is not None else None
            cpu = host.cpu_percent if host is not None else None
            device.show(f"{gib(used_ram)}, CPU {number(cpu, 0, '%')}", series["host_memory_used_bytes"])
        panel("ttft").show(
            f"{milliseconds(value('ttft_p50_s'))} / {milliseconds(value('ttft_p95_s'))}", series["ttft_p95_s"]
        )
        panel("itl").show(
            f"{milliseconds(value('itl_p50_s'))} / {milliseconds(value('itl_p95_s'))}", series["itl_p95_s"]
        )
        panel("prefix").show(percent(value("prefix_cache_hit_rate")), series["prefix_cache_hit_rate"])
        panel("preempt").show(
            f"{number(value('preemptions_total'), 0)} total, {number(value('preemptions_per_s'))}/s",
            message.preemptions,
        )
        if snapshot.ok:
            self.quant_app.complete_step("dashboard")

    def _show_status(self) -> None:
        shown = (self.poll_status, self.load_status)
        if shown == getattr(self, "_shown_status", None):
            return
        self._shown_status = shown
        line = Text(self.poll_status, style="bold")
        line.append(f"\n{self.load_status}")
        self.query_one("#dashboard-status", Static).update(line)

    def action_interval(self, direction: int) -> None:
        """Polls more or less often.

        Args:
            direction: -1 for shorter intervals, +1 for longer.
        """
        current = self.poller.interval_s if self.poller is not None else self.quant_app.poll_interval
        index = min(range(len(INTERVALS)), key=lambda i: abs(INTERVALS[i] - current))
        interval = INTERVALS[max(0, min(len(INTERVALS) - 1, index + direction))]
        self.quant_app.poll_interval = interval
        if self.poller is not None:
            self.poller.interval_s = interval
        self.notify(f"Polling every {interval:g} s.", timeout=2)

    def action_load(self) -> None:
        """Starts the built-in load generator, or stops it."""
        if self.load_stop is not None:
            self.load_stop.set()
            self.load_status = "load: stopping…"
            self._show_status()
            return
        url = self.quant_app.server_url
        if url is None:
            self.notify("No server to load yet.", severity="warning")
            return
        self.load_stop = threading.Event()
        self.quant_app.background_stops.append(self.load_stop)
        self.load_status = (
            f"load: starting ({LOAD_CONCURRENCY} at a time, {LOAD_PROMPT_TOKENS}+{LOAD_OUTPUT_TOKENS} tokens)"
        )
        self._show_status()
        self._load(url, self.load_stop)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False, description="Sending load")
    def _load(self, url: str, stop: threading.Event) -> None:
        from engine.bench.loadgen import LoadSpec, run_load

        spec = LoadSpec(
            concurrency=LOAD_CONCURRENCY,
            prompt_tokens=LOAD_PROMPT_TOKENS,
            output_tokens=LOAD_OUTPUT_TOKENS,
            requests=None,
            duration_s=LOAD_MAX_SECONDS,
        )
        try:
            result = run_load(
                url, spec, self.quant_app.api_key, on_progress=self._report_load, stop_event=stop
            )
        finally:
            self.app.call_from_thread(self._load_ended)
        self.post_message(self.LoadDone(result))

    def _report_load(self, progress: LoadProgress) -> None:
        self.post_message(self.LoadTick(progress))

    def _load_ended(self) -> None:
        self.load_stop = None
        if self.load_status.startswith(("load: starting", "load: stopping", "load: running")):
            self.load_status = "load: off (l starts it)"
            self._show_status()

    def on_dashboard_screen_load_tick(self, message: LoadTick) -> None:
        """Counts finished requests."""
        progress = message.progress
        self.load_status = (
            f"load: running, {progress.finished} requests done ({progress.failed} failed), "
            f"{progress.generated_tokens:,} tokens generated (l stops)"
        )
        self._show_status()

    def on_dashboard_screen_load_done(self, message: LoadDone) -> None:
        """Sums up the load that ran."""
        from engine.bench.loadgen import Outcome

        result = message.result
        cancelled = sum(1 for record in result.records if record.outcome == Outcome.CANCELLED)
        failed = sum(1 for record in result.records if record.outcome not in (Outcome.OK, Outcome.CANCELLED))
        self.load_status = (
            f"load: off; last: {result.ok_requests} ok, {failed} failed, {cancelled} cut by stop, "
            f"{number(result.output_tokens_per_s)} tok/s (l restarts)"
        )
        self._show_status()

    def action_export(self, kind: str) -> None:
        """Saves the history of this run next to where quant-tui was started.

        Args:
            kind: ``"csv"`` or ``"json"``.
        """
        poller = self.poller
        if poller is None:
            self.notify("Nothing to export yet: no server has been polled.", severity="warning")
            return
        path = Path.cwd() / f"quant-tui-run-{time.strftime('%Y%m%d-%H%M%S')}.{kind}"
        self._export(poller, kind, path)

    @work(thread=True, group="export", exit_on_error=False, description="Exporting the run")
    def _export(self, poller: TelemetryPoller, kind: str, path: Path) -> None:
        written = poller.export_csv(path) if kind == "csv" else poller.export_json(path)
        self.app.call_from_thread(self.notify, f"Saved {written}", timeout=6)
