"""ServeScreen: start vLLM on the chosen model, stream its launch log, show its health or the diagnosis."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Log, Static

from engine.serve.phases import PhaseLog
from tui.format import home_path
from tui.screens.base import StepScreen
from tui.screens.error_dialog import describe_error
from tui.startup_text import engine_phrases, kv_cache_phrase

if TYPE_CHECKING:
    from engine.serve.launcher import ServerConfig, VllmServer
    from engine.serve.plan_check import PlanVsActual
    from engine.serve.startup_facts import StartupFacts
    from tui.app import StoppableServer
    from tui.state import Selection

LOG_LINES = 2000

ServeState = Literal["stopped", "starting", "healthy", "stopping", "failed"]


def serve_folder(selection: Selection) -> Path | None:
    """What to serve: the quantized output, or the model itself (a single-file GGUF model: its file) when the plan needs no quantization."""
    if selection.serve_dir is not None:
        return selection.serve_dir
    candidate = selection.candidate
    if selection.model is not None and (candidate is None or not candidate.needs_quantization):
        return selection.model.gguf_file or selection.model.path
    return None


def startup_text(facts: StartupFacts) -> Text:
    """What the server said about itself while starting: KV cache, concurrency, kernels, timings."""
    text = Text("Started. ", style="bold")
    kv = kv_cache_phrase(facts)
    parts = [*([] if kv is None else [f"KV cache {kv}"]), *engine_phrases(facts)]
    text.append("; ".join(parts) or "vLLM said nothing about its memory")
    text.append("\nPress n for the dashboard.")
    return text


def comparison_text(comparison: PlanVsActual) -> Text:
    """The plan's prediction beside what vLLM reported, with the difference."""
    from engine.serve.plan_check import comparison_lines

    verdict = "plan = vLLM" if comparison.exact else "plan and vLLM DIFFER"
    text = Text(f"Plan vs. actual ({verdict}):\n", style="bold")
    text.append("\n".join(comparison_lines(comparison)))
    return text


class ServeScreen(StepScreen):
    """Step 5: the vLLM server, started from here and stopped with the app."""

    MODE = "serve"
    HELP_TITLE = "5 Serve"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "start", "Start server", tooltip="Start vLLM on the chosen model"),
        Binding("x", "stop", "Stop server", tooltip="Stop the server and everything it started"),
        Binding(
            "l", "toggle_log", "Raw log", tooltip="Switch between the compact phase log and vLLM's full log"
        ),
        Binding("n", "next", "Next: dashboard", tooltip="Watch the server on the dashboard"),
    ]

    state: reactive[ServeState] = reactive[ServeState]("stopped")
    """Where the server this screen started is."""

    # Start-up bookkeeping (class defaults: the state watcher may run before on_mount).
    raw_log = False
    _phases = PhaseLog()
    _started_at: float | None = None
    _ready_after: float | None = None

    @dataclass
    class LogLine(Message):
        """The server wrote a line."""

        line: str

    @dataclass
    class Healthy(Message):
        """The server answers its health check."""

        url: str
        facts: StartupFacts
        comparison: PlanVsActual | None = None

    @dataclass
    class Failed(Message):
        """The server did not come up, or died."""

        error: BaseException
        server: VllmServer | None = None
        """The server that failed (already stopped), when one was made."""

    def compose_body(self) -> ComposeResult:
        """What is served, the health state, the log and the diagnosis."""
        yield Static("", id="serve-info")
        yield Static("", id="serve-state")
        yield Log(id="serve-log", max_lines=LOG_LINES)
        yield Static("", id="serve-diagnosis")

    def on_mount(self) -> None:
        """Shows what would be served."""
        super().on_mount()
        self.cancel_start = threading.Event()
        self.raw_log = False
        self._raw_lines: list[str] = []
        self._compact_lines: list[str] = []
        self._phases = PhaseLog()
        self._started_at: float | None = None
        self._ready_after: float | None = None
        self.watch(self.quant_app, "selection", self._show_info, init=True)
        self._title_log()
        self.watch_state(self.state)
        self.set_interval(1.0, self._tick)

    def _title_log(self) -> None:
        log = self.query_one("#serve-log", Log)
        log.border_title = "vLLM log (all lines)" if self.raw_log else "start-up phases"
        log.border_subtitle = "l: compact phases" if self.raw_log else "l: full log"

    def _tick(self) -> None:
        if self.state == "starting":
            self.watch_state(self.state)

    def _show_info(self, _selection: object = None) -> None:
        folder = serve_folder(self.selection)
        info = self.query_one("#serve-info", Static)
        if folder is None:
            candidate = self.selection.candidate
            if candidate is not None:
                info.update(
                    f"The chosen plan ({candidate.method}) needs its checkpoint: quantize it first (4)."
                )
            else:
                info.update("Nothing to serve yet: load a model (2) and choose a plan (3).")
            return
        text = Text()
        text.append("Serve ", style="bold")
        text.append(home_path(folder))
        candidate = self.selection.candidate
        if candidate is not None:
            text.append(
                f"\nplan: {candidate.method}, context {self._max_model_len():,}, KV {candidate.kv_cache_dtype}"
            )
        info.update(text)

    def _max_model_len(self) -> int:
        selection = self.selection
        if selection.request is not None and selection.request.max_model_len:
            return selection.request.max_model_len
        if selection.model is not None:
            return min(selection.model.max_context, 32768)
        return 0

    def _elapsed(self) -> str:
        if self._started_at is None:
            return ""
        return f"{time.monotonic() - self._started_at:.0f} s"

    def watch_state(self, state: ServeState) -> None:
        """Shows the health state in words (and a mark, for terminals without colour)."""
        phase = self._phases.phase
        ready = f" (ready in {self._ready_after:.0f} s)" if self._ready_after is not None else ""
        elapsed = self._elapsed()
        marks = {
            "stopped": "[ ] stopped",
            "starting": f"[~] starting, {elapsed}: {phase}…",
            "healthy": f"[OK] healthy at {self.quant_app.server_url}{ready}",
            "stopping": "[~] stopping…",
            "failed": "[X] failed (see below)",
        }
        if self.is_attached:
            self.query_one("#serve-state", Static).update(
                Text(f"State: {marks.get(state, state)}", style="bold")
            )

    def action_start(self) -> None:
        """Starts the server in a thread and waits for it to be healthy."""
        if self.state in ("starting", "healthy", "stopping"):
            self.notify(f"The server is {self.state}.")
            return
        folder = serve_folder(self.selection)
        if folder is None:
            self.notify("Nothing to serve yet.", severity="warning")
            return
        self.query_one("#serve-diagnosis", Static).update("")
        self.query_one("#serve-log", Log).clear()
        self._raw_lines.clear()
        self._compact_lines.clear()
        self._phases = PhaseLog()
        self._started_at = time.monotonic()
        self._ready_after = None
        self.quant_app.discard_background_stop(self.cancel_start)
        self.cancel_start = threading.Event()
        self.quant_app.add_background_stop(self.cancel_start)
        self.state = "starting"
        self._serve(folder, self.cancel_start)

    def server_config(self, folder: Path) -> ServerConfig:
        """The server to run: the chosen plan's own ServerConfig, the one `recommend` prints.

        Without a plan, or with one made for hardware other than this machine (a catalogued GPU),
        the checkpoint is planned here as ``quant-tui serve`` plans it, with the same knobs.

        Raises:
            QuantTuiError: the plan spans boxes and no Ray cluster is reachable from here.
        """
        from dataclasses import replace

        from engine.plan.recommender import PlanRequest, plan_checkpoint

        selection = self.selection
        candidate = selection.candidate
        target = selection.target
        if candidate is not None and target is not None and target.source == "detected":
            config = replace(candidate.server, model=folder)
        else:
            request = selection.request or PlanRequest()
            local = replace(request, tensor_parallel_size=None)
            config = plan_checkpoint(folder, local).server
        if (
            config.pipeline_parallel_size > 1 and config.distributed_executor_backend == "ray"
        ):  # as `quant-tui serve`: only where vLLM joins a Ray cluster
            from engine.plan.multi_node import require_ray_cluster

            require_ray_cluster(
                config.pipeline_parallel_size,
                "run the Ray steps the Plan screen shows, each on the node it names, the last one on the head node",
            )
        return replace(config, api_key=self.quant_app.api_key)

    @work(thread=True, exclusive=True, group="serve", exit_on_error=False, description="Starting the server")
    def _serve(self, folder: Path, cancel: threading.Event) -> None:
        from engine.errors import QuantTuiError
        from engine.serve.launcher import VllmServer

        try:
            config = self.server_config(folder)
        except BaseException as error:
            self.post_message(self.Failed(error))
            return
        server = VllmServer(config, on_log=self._report_log)
        # The app learns of the server before it starts, on its own thread, so quitting stops it.
        self.app.call_from_thread(self._adopt, server, None, cancel)
        try:
            if cancel.is_set():
                raise QuantTuiError("the start was cancelled before the server started")
            server.start()
            self.app.call_from_thread(self._adopt, server, server.pid, cancel)
            self._report_log(f"quant-tui: plan: {config.command_line(server.backend)}")
            facts = server.wait_healthy(cancel=cancel)
        except BaseException as error:
            server.stop()
            self.post_message(self.Failed(error, server))
            return
        self.post_message(self.Healthy(server.url, facts, server.comparison))

    def _adopt(self, server: VllmServer, pid: int | None, cancel: threading.Event) -> None:
        if cancel.is_set():
            return  # stopped or quitting meanwhile: the worker stops this server itself
        self.quant_app.server = server
        self.quant_app.server_pid = pid

    def _report_log(self, line: str) -> None:
        self.post_message(self.LogLine(line))

    def on_serve_screen_log_line(self, message: LogLine) -> None:
        """Keeps the raw line; shows it, or its compact phase line, in the log pane."""
        line = message.line
        shown = line if line.startswith("quant-tui:") else self._phases.feed(line)
        self._raw_lines.append(line)
        del self._raw_lines[:-LOG_LINES]
        if shown is not None:
            self._compact_lines.append(shown)
            del self._compact_lines[:-LOG_LINES]
        log = self.query_one("#serve-log", Log)
        if self.raw_log:
            log.write_line(line)
        elif shown is not None:
            log.write_line(shown)
        if self.state == "starting":
            self.watch_state(self.state)

    def action_toggle_log(self) -> None:
        """Switches the log pane between the compact phases and vLLM's full log."""
        self.raw_log = not self.raw_log
        log = self.query_one("#serve-log", Log)
        log.clear()
        log.write_lines(self._raw_lines if self.raw_log else self._compact_lines)
        self._title_log()

    def on_serve_screen_healthy(self, message: Healthy) -> None:
        """The server is up: the dashboard watches it."""
        self.quant_app.discard_background_stop(self.cancel_start)
        self.quant_app.server_url = message.url
        if self._started_at is not None:
            self._ready_after = time.monotonic() - self._started_at
        self.state = "healthy"
        self.quant_app.complete_step("serve")
        parts: list[Text] = [startup_text(message.facts)]
        if message.comparison is not None:
            parts.append(comparison_text(message.comparison))
        self.query_one("#serve-diagnosis", Static).update(Group(*parts))

    def on_serve_screen_failed(self, message: Failed) -> None:
        """Shows the diagnosis in plain words, with the fix."""
        self.quant_app.discard_background_stop(self.cancel_start)
        if message.server is not None and self.quant_app.server is message.server:
            self.quant_app.server = None
            self.quant_app.server_pid = None
        self.state = "failed"
        if self.cancel_start.is_set():
            self.state = "stopped"
            return
        report = describe_error("Starting the server", message.error)
        self.query_one("#serve-diagnosis", Static).update(
            Group(Text(f"Cause: {report.cause}", style="bold"), Text(f"Fix: {report.fix}"))
        )

    def action_stop(self) -> None:
        """Stops the server (in a thread: stopping waits for the process tree to exit)."""
        server = self.quant_app.server
        if server is None:
            self.notify("No server is running.")
            return
        self.cancel_start.set()
        self.quant_app.server = None
        self.state = "stopping"
        self._stop(server)

    @work(
        thread=True,
        exclusive=True,
        group="serve-stop",
        exit_on_error=False,
        description="Stopping the server",
    )
    def _stop(self, server: StoppableServer) -> None:
        server.stop()
        self.app.call_from_thread(self._stopped)

    def _stopped(self) -> None:
        self.state = "stopped"
        self.quant_app.server_url = None
        self.quant_app.server_pid = None

    def action_next(self) -> None:
        """Goes on to the dashboard."""
        self.quant_app.action_go("dashboard")
