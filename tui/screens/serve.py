"""ServeScreen: start vLLM on the chosen model, stream its launch log, show its health or the diagnosis."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Log, Static

from tui.format import home_path, size
from tui.screens.base import StepScreen
from tui.screens.error_dialog import describe_error

if TYPE_CHECKING:
    from engine.serve.launcher import ServerConfig
    from engine.serve.server_log import StartupFacts
    from tui.state import Selection


def serve_folder(selection: Selection) -> Path | None:
    """The folder to serve: the quantized output, or the model itself when the plan needs no quantization."""
    if selection.serve_dir is not None:
        return selection.serve_dir
    candidate = selection.candidate
    if selection.model is not None and (candidate is None or not candidate.needs_quantization):
        return selection.model.path
    return None


def startup_text(facts: StartupFacts) -> Text:
    """What the server said about itself while starting: KV cache, concurrency, kernels, timings."""
    text = Text("Started. ", style="bold")
    parts = []
    if facts.kv_cache_tokens is not None:
        kv_bytes = f" ({size(facts.kv_cache_bytes)})" if facts.kv_cache_bytes else ""
        parts.append(f"KV cache {facts.kv_cache_tokens:,} tokens{kv_bytes}")
    if facts.max_concurrency is not None:
        at = f" at {facts.max_concurrency_at_tokens:,} tokens" if facts.max_concurrency_at_tokens else ""
        parts.append(f"{facts.max_concurrency:.1f}x concurrency{at}")
    if facts.quantization:
        parts.append(f"quantization {facts.quantization}")
    if facts.linear_kernel:
        parts.append(f"kernel {facts.linear_kernel}")
    if facts.dtype:
        parts.append(f"dtype {facts.dtype}")
    if facts.load_seconds is not None:
        parts.append(f"weights loaded in {facts.load_seconds:.1f} s")
    text.append("; ".join(parts) or "vLLM said nothing about its memory")
    text.append("\nPress n for the dashboard.")
    return text


class ServeScreen(StepScreen):
    """Step 5: the vLLM server, started from here and stopped with the app."""

    MODE = "serve"
    HELP_TITLE = "5 Serve"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "start", "Start server", tooltip="Start vLLM on the chosen model"),
        Binding("x", "stop", "Stop server", tooltip="Stop the server and everything it started"),
        Binding("n", "next", "Next: dashboard", tooltip="Watch the server on the dashboard"),
    ]

    state: reactive[str] = reactive("stopped")
    """``stopped``, ``starting``, ``healthy``, ``stopping`` or ``failed``."""

    class LogLine(Message):
        """The server wrote a line."""

        def __init__(self, line: str) -> None:
            self.line = line
            super().__init__()

    class Healthy(Message):
        """The server answers its health check."""

        def __init__(self, url: str, facts: StartupFacts) -> None:
            self.url = url
            self.facts = facts
            super().__init__()

    class Failed(Message):
        """The server did not come up, or died."""

        def __init__(self, error: BaseException) -> None:
            self.error = error
            super().__init__()

    def compose_body(self) -> ComposeResult:
        """What is served, the health state, the log and the diagnosis."""
        yield Static("", id="serve-info")
        yield Static("", id="serve-state")
        yield Log(id="serve-log", max_lines=2000)
        yield Static("", id="serve-diagnosis")

    def on_mount(self) -> None:
        """Shows what would be served."""
        super().on_mount()
        self.cancel_start = threading.Event()
        self.quant_app.background_stops.append(self.cancel_start)
        self.watch(self.quant_app, "selection", self._show_info, init=True)
        self.query_one("#serve-log", Log).border_title = "server log"
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

    def watch_state(self, state: str) -> None:
        """Shows the health state in words (and a mark, for terminals without colour)."""
        marks = {
            "stopped": "[ ] stopped",
            "starting": "[~] starting: loading the model and profiling memory…",
            "healthy": f"[OK] healthy at {self.quant_app.server_url}",
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
        self.cancel_start = threading.Event()
        self.quant_app.background_stops.append(self.cancel_start)
        self.state = "starting"
        self._serve(self._server_config(folder), self.cancel_start)

    def _server_config(self, folder: Path) -> ServerConfig:
        """How to run the server here, from the chosen plan."""
        from engine.serve.launcher import ServerConfig

        selection = self.selection
        candidate = selection.candidate
        target = selection.target
        has_gpu = bool(selection.hardware and selection.hardware.gpus)
        # A plan made for a catalogued box says nothing about this machine's GPU count.
        tensor_parallel = (
            candidate.tensor_parallel_size if candidate and target and target.source == "detected" else 1
        )
        return ServerConfig(
            model=folder,
            max_model_len=self._max_model_len() or None,
            kv_cache_dtype=candidate.kv_cache_dtype if candidate is not None else "auto",
            tensor_parallel_size=tensor_parallel,
            # The CPU backend gains nothing from graph capture and starts much faster without it.
            enforce_eager=not has_gpu,
            api_key=self.quant_app.api_key,
        )

    @work(thread=True, exclusive=True, group="serve", exit_on_error=False, description="Starting the server")
    def _serve(self, config: ServerConfig, cancel: threading.Event) -> None:
        from engine.serve.launcher import VllmServer

        server = VllmServer(config, on_log=self._report_log)
        self.quant_app.server = server
        try:
            server.start()
            self.quant_app.server_pid = server.pid
            facts = server.wait_healthy(cancel=cancel)
        except BaseException as error:
            server.stop()
            self.quant_app.server = None
            self.post_message(self.Failed(error))
            return
        self.post_message(self.Healthy(server.url, facts))

    def _report_log(self, line: str) -> None:
        self.post_message(self.LogLine(line))

    def on_serve_screen_log_line(self, message: LogLine) -> None:
        """Appends a server log line."""
        self.query_one("#serve-log", Log).write_line(message.line)

    def on_serve_screen_healthy(self, message: Healthy) -> None:
        """The server is up: the dashboard watches it."""
        self.quant_app.server_url = message.url
        self.state = "healthy"
        self.quant_app.complete_step("serve")
        self.query_one("#serve-diagnosis", Static).update(startup_text(message.facts))

    def on_serve_screen_failed(self, message: Failed) -> None:
        """Shows the diagnosis in plain words, with the fix."""
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
        if self.quant_app.server is None:
            self.notify("No server is running.")
            return
        self.cancel_start.set()
        self.state = "stopping"
        self._stop()

    @work(
        thread=True,
        exclusive=True,
        group="serve-stop",
        exit_on_error=False,
        description="Stopping the server",
    )
    def _stop(self) -> None:
        server, self.quant_app.server = self.quant_app.server, None
        if server is not None:
            server.stop()
        self.app.call_from_thread(self._stopped)

    def _stopped(self) -> None:
        self.state = "stopped"
        self.quant_app.server_url = None
        self.quant_app.server_pid = None

    def action_next(self) -> None:
        """Goes on to the dashboard."""
        self.quant_app.action_go("dashboard")
