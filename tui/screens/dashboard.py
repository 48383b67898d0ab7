"""DashboardScreen: time-series graphs of a vLLM server, its devices, its death and restart, a load generator, export."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.message import Message
from textual.widgets import Static

from tui.screens import dashboard_status as words
from tui.screens.base import StepScreen
from tui.widgets.device_panel import DevicePanel
from tui.widgets.graphs import GPU_MEMORY, GRAPHS, HOST_MEMORY, SERVER_MEMORY
from tui.widgets.time_plot import TimePlot, window_label

if TYPE_CHECKING:
    from engine.bench.load_result import LoadProgress, LoadResult
    from engine.serve.failure_diagnosis import Diagnosis
    from engine.serve.launcher import VllmServer
    from engine.telemetry.poller import TelemetryPoller
    from engine.telemetry.snapshot import TelemetrySnapshot

INTERVALS = (0.25, 0.5, 1.0, 2.0, 5.0)

# The graphs show this many ticks: two minutes at the default 1 s polls.
WINDOW_TICKS = 120


class DashboardScreen(StepScreen):
    """Step 6 (and ``quant-tui monitor``): what the server does, polled from its ``/metrics``."""

    MODE = "dashboard"
    HISTORY_TICKS: ClassVar[int | None] = None
    """How many polls the history keeps (exports, graphs); ``None``: the poller's default (600)."""
    HELP_TITLE = "6 Dashboard"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "load", "Load", tooltip="Start or stop the built-in load generator"),
        Binding("r", "restart", "Restart", tooltip="Restart the server quant-tui started (after it died)"),
        Binding("plus,equals_sign", "interval(-1)", "Faster", tooltip="Poll more often"),
        Binding("minus", "interval(1)", "Slower", tooltip="Poll less often"),
        Binding("e", "export('csv')", "CSV", tooltip="Save the run's history as CSV in this folder"),
        Binding("j", "export('json')", "JSON", tooltip="Save the run's snapshots as JSON in this folder"),
        Binding(
            "b",
            "app.bench",
            "Bench",
            tooltip="Benchmark this server: a concurrency sweep, or A/B across methods",
        ),
    ]

    @dataclass
    class Tick(Message):
        """The poller took a snapshot; the series are the history up to it."""

        snapshot: TelemetrySnapshot
        series: dict[str, list[float | None]]

    @dataclass
    class Restarted(Message):
        """The server came back after a restart from here."""

        url: str
        pid: int | None

    @dataclass
    class LoadTick(Message):
        """The load generator finished a request."""

        progress: LoadProgress

    @dataclass
    class LoadDone(Message):
        """The load generator stopped."""

        result: LoadResult

    def __init__(self) -> None:
        """Creates the screen; polling starts once there is a server URL."""
        super().__init__()
        self.poller: TelemetryPoller | None = None
        self.poll_stop = threading.Event()
        self.load_stop: threading.Event | None = None
        self.load_status = words.LOAD_OFF
        self.poll_status = ""
        self.death: str | None = None
        """Set while the watched server is dead: what died, why and what to do (shown in red)."""
        self.restarting = False
        self._graphs_drawn_at = -math.inf

    def compose_body(self) -> ComposeResult:
        """The status line, the graphs and the devices."""
        yield Static("", id="dashboard-status")
        with Grid(id="graphs"):
            for spec in (*GRAPHS, HOST_MEMORY):
                yield TimePlot(spec, id=f"graph-{spec.id}")
        yield DevicePanel(id="devices")

    def on_mount(self) -> None:
        """Starts polling when the app knows a server."""
        super().on_mount()
        self.watch(self.quant_app, "server_url", self._server_changed, init=True)

    def on_unmount(self) -> None:
        """Stops the poller and the load with the screen."""
        self.poll_stop.set()
        if self.load_stop is not None:
            self.load_stop.set()

    def _server_changed(self, url: str | None) -> None:
        self.poll_stop.set()
        self.quant_app.discard_background_stop(self.poll_stop)
        if url is None:
            self.poll_status = (
                "No server to watch yet: start one on the Serve step (5), or run `quant-tui monitor URL`."
            )
            self._show_status()
            return
        self.poll_stop = threading.Event()
        self.quant_app.add_background_stop(self.poll_stop)
        self.poll_status = f"connecting to {url}…"
        self._show_status()
        self._poll(url, self.poll_stop)

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False, description="Polling the server")
    def _poll(self, url: str, stop: threading.Event) -> None:
        from engine.telemetry.poller import DEFAULT_HISTORY, TelemetryPoller

        app = self.quant_app
        pid = app.server_pid if app.server_pid is not None else words.local_server_pid(url)
        poller = TelemetryPoller(
            url,
            interval_s=app.poll_interval,
            api_key=app.api_key,
            server_pid=pid,
            history=self.HISTORY_TICKS or DEFAULT_HISTORY,
            sample_hardware=app.sample_hardware,
        )
        self.poller = poller

        def on_snapshot(snapshot: TelemetrySnapshot) -> None:
            self.post_message(self.Tick(snapshot, poller.series()))

        with poller:
            poller.run(on_snapshot, stop)

    def on_dashboard_screen_tick(self, message: Tick) -> None:
        """Redraws the status, graphs and devices (only while the dashboard is on screen)."""
        if self.is_current:
            self.draw(message.snapshot, message.series, live=True)

    def draw(
        self, snapshot: TelemetrySnapshot, series: dict[str, list[float | None]], live: bool = False
    ) -> None:
        """Shows one snapshot and the history up to it.

        Args:
            snapshot: The latest poll.
            series: The history, as :meth:`engine.telemetry.poller.TelemetryPoller.series` gives it.
            live: Polls keep coming: a graph's lines are redrawn at most once per braille dot its x axis
                moves (titles at once), so a busy server does not rebuild every plot on every poll.
        """
        interval = self.poller.interval_s if self.poller is not None else self.quant_app.poll_interval
        window_s = WINDOW_TICKS * interval
        self._note_death(snapshot)
        if snapshot.ok:
            self.poll_status = (
                f"watching {snapshot.url}, every {interval:g} s; graphs: last {window_label(window_s)}"
            )
        elif self.death is None:
            self.poll_status = f"POLL FAILED: {snapshot.error}"
        self._show_status()
        latest = snapshot.series_values()
        times = [time_s if time_s is not None else 0.0 for time_s in series.get("wall_time", [])]
        memory = (
            GPU_MEMORY
            if snapshot.gpus
            else SERVER_MEMORY
            if snapshot.server_alive is not None
            else HOST_MEMORY
        )
        plots = list(self.query(TimePlot))
        redraw = not live or self._graphs_due(plots, window_s, interval)
        for plot in plots:
            if plot.spec.id == "memory" and plot.spec is not memory:
                plot.spec = memory
            plot.show(times, series, window_s, latest, redraw)
        self.query_one(DevicePanel).show(snapshot)
        if snapshot.ok:
            self.quant_app.complete_step("dashboard")

    def _graphs_due(self, plots: list[TimePlot], window_s: float, interval: float) -> bool:
        """Whether the graphs' lines are redrawn on this poll: once their x axes have moved by a braille dot.

        All graphs redraw on the same poll, so their new pictures go out in one screen update; the one
        with the fewest columns (the longest time per dot) sets the pace.
        """
        now = time.monotonic()
        period = max((plot.redraw_period(window_s) for plot in plots), default=0.0)
        # Half a poll early: with polls every 1 s and a dot every 2.1 s, every second poll redraws.
        if now - self._graphs_drawn_at < period - interval / 2:
            return False
        self._graphs_drawn_at = now
        return True

    def _note_death(self, snapshot: TelemetrySnapshot) -> None:
        """Says, in red, that the server died and why; clears it once the server answers again."""
        if snapshot.ok and not snapshot.engine_died:
            if self.death is not None and not self.restarting:
                self.death = None
            return
        if not snapshot.engine_died:
            return
        self.death = words.death_text(snapshot.error, self._diagnosis(), self._own_server() is not None)

    def _own_server(self) -> Any | None:
        """The server quant-tui started and watches here, when there is one."""
        server = self.quant_app.server
        return server if server is not None and hasattr(server, "log_tail") else None

    def _diagnosis(self) -> Diagnosis | None:
        from engine.serve.failure_diagnosis import diagnose_failure

        server = self._own_server()
        if server is None:
            return None
        return diagnose_failure(server.log_tail, getattr(server, "returncode", None))

    def action_restart(self) -> None:
        """Restarts the server quant-tui started, keeping the history."""
        server = self._own_server()
        if server is None or not hasattr(server, "config"):
            self.notify(
                "quant-tui did not start this server: restart it where it runs; the dashboard reconnects.",
                severity="warning",
            )
            return
        if self.restarting:
            self.notify("The server is already restarting.")
            return
        self.restarting = True
        self.death = "restarting the server…"
        self._show_status()
        self._restart(server)

    @work(
        thread=True, exclusive=True, group="restart", exit_on_error=False, description="Restarting the server"
    )
    def _restart(self, old: Any) -> None:
        from engine.serve.launcher import VllmServer

        try:
            old.stop()
            server = VllmServer(old.config)
            # The app's shared state changes on its own thread; it knows the server before it starts.
            self.app.call_from_thread(self._adopt, server, None)
            server.start()
            self.app.call_from_thread(self._adopt, server, server.pid)
            server.wait_healthy()
        except BaseException:
            self.app.call_from_thread(self._restart_failed)
            raise
        self.post_message(self.Restarted(server.url, server.pid))

    def _adopt(self, server: VllmServer, pid: int | None) -> None:
        self.quant_app.server = server
        self.quant_app.server_pid = pid

    def _restart_failed(self) -> None:
        self.restarting = False
        self.death = "the restart failed (see the error); r tries again"
        self._show_status()

    def on_dashboard_screen_restarted(self, message: Restarted) -> None:
        """Watches the new server with the same history."""
        self.restarting = False
        self.death = None
        if self.poller is not None:
            self.poller.retarget(message.url, message.pid)
        self.quant_app.set_reactive(type(self.quant_app).server_url, message.url)
        self.notify(f"The server is back at {message.url}.", timeout=6)
        self._show_status()

    def _show_status(self) -> None:
        shown = (self.poll_status, self.load_status, self.death)
        if shown == getattr(self, "_shown_status", None):
            return
        self._shown_status = shown
        status = self.query_one("#dashboard-status", Static)
        was_dead = status.has_class("-dead")
        if self.death is not None:
            line = Text(self.death, style="bold")
            status.add_class("-dead")
        else:
            line = Text(self.poll_status, style="bold")
            line.append(f"\n{self.load_status}")
            status.remove_class("-dead")
        # The live status is two rows high whatever it says: new words need no layout (which would
        # repaint every graph); a death's text may take more rows.
        status.update(line, layout=self.death is not None or was_dead)

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
            self.load_status = words.LOAD_STOPPING
            self._show_status()
            return
        url = self.quant_app.server_url
        if url is None:
            self.notify("No server to load yet.", severity="warning")
            return
        self.load_stop = threading.Event()
        self.quant_app.add_background_stop(self.load_stop)
        self.load_status = words.LOAD_STARTING
        self._show_status()
        self._load(url, self.load_stop)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False, description="Sending load")
    def _load(self, url: str, stop: threading.Event) -> None:
        from engine.bench.load_spec import LoadSpec
        from engine.bench.loadgen import run_load

        spec = LoadSpec(
            concurrency=words.LOAD_CONCURRENCY,
            prompt_tokens=words.LOAD_PROMPT_TOKENS,
            output_tokens=words.LOAD_OUTPUT_TOKENS,
            requests=None,
            duration_s=words.LOAD_MAX_SECONDS,
        )
        try:
            result = run_load(
                url, spec, self.quant_app.api_key, on_progress=self._report_load, stop_event=stop
            )
        finally:
            self.app.call_from_thread(self._load_ended, stop)
        self.post_message(self.LoadDone(result))

    def _report_load(self, progress: LoadProgress) -> None:
        self.post_message(self.LoadTick(progress))

    def _load_ended(self, stop: threading.Event) -> None:
        self.quant_app.discard_background_stop(stop)
        self.load_stop = None
        if self.load_status.startswith(("load: starting", "load: stopping", "load: running")):
            self.load_status = words.LOAD_OFF
            self._show_status()

    def on_dashboard_screen_load_tick(self, message: LoadTick) -> None:
        """Counts finished requests."""
        self.load_status = words.load_running_text(message.progress)
        self._show_status()

    def on_dashboard_screen_load_done(self, message: LoadDone) -> None:
        """Sums up the load that ran."""
        self.load_status = words.load_done_text(message.result)
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
