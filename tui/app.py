"""The quant-tui Textual app: the guided flow from hardware to a served, quantized model, and the dashboard."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen

from tui.screens.error_dialog import ErrorDialog, ErrorReport, describe_error
from tui.screens.quit_dialog import QuitDialog
from tui.state import Selection
from tui.steps import BENCH, STEPS, Step

if TYPE_CHECKING:
    from engine.hardware.detect import HardwareSnapshot
    from engine.plan.plan_request import PlanRequest


class StoppableServer(Protocol):
    """What the app needs of a server it started: a way to stop it."""

    def stop(self) -> Any:
        """Stops the server and its process tree."""


class QuantTuiApp(App[int]):
    """The guided app: Hardware → Model → Plan → Quantize → Serve → Dashboard, one key per step.

    State that several screens share lives in :attr:`selection`; what runs in the background (a
    server, a quantization) is registered here so quitting can ask first and stop it cleanly.
    """

    CSS_PATH = "app.tcss"
    TITLE = "quant-tui"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark,f1", "help", "Help", tooltip="Every key of every screen"),
        # q as in htop and nvitop; not a priority binding, so a focused text field still gets the letter.
        Binding(
            "q", "quit", "Quit", show=False, tooltip="Quit (asks first while a server or quantization runs)"
        ),
        Binding("ctrl+q", "quit", "Quit", priority=True, tooltip="Quit, also while typing in a text field"),
        *[
            Binding(step.key, f"go('{step.mode}')", f"Go to {step.label}", show=False)
            for step in STEPS
            if step.key
        ],
    ]

    selection: reactive[Selection] = reactive(Selection, always_update=True)
    """What has been chosen so far (hardware, target, model, plan, what to serve)."""
    done_steps: reactive[frozenset[str]] = reactive(frozenset)
    """The steps finished, ticked in the step bar."""
    server_url: reactive[str | None] = reactive(None)
    """The base URL of the server the dashboard watches."""

    def __init__(
        self,
        model: str = "demo",
        gpu: str | None = None,
        hardware: HardwareSnapshot | None = None,
        *,
        steps: tuple[Step, ...] = STEPS,
        server_url: str | None = None,
        api_key: str | None = None,
        interval: float = 1.0,
        sample_hardware: bool = True,
        hf_cache: Path | None = None,
        request: PlanRequest | None = None,
    ) -> None:
        """Creates the app; nothing is detected or loaded until the screens are shown.

        Args:
            model: The model to start with: ``demo``, a folder or a cached repo id.
            gpu: Plan for a catalogued GPU (``"H100x2"``) instead of this machine's.
            hardware: A fixed hardware snapshot to use instead of detecting (tests, demos).
            steps: The steps this app offers, in order.
            server_url: A server to watch from the start (the monitor).
            api_key: The server's API key, for the dashboard's polls and load.
            interval: Seconds between dashboard polls.
            sample_hardware: Whether the dashboard samples GPUs and host with each poll.
            hf_cache: The Hugging Face hub cache to list and resolve models from (default: the usual one).
            request: The plan knobs to start from (default: PlanRequest's own defaults).
        """
        self.steps = steps
        self.gpu_spec = gpu
        self.api_key = api_key
        self.poll_interval = interval
        self.sample_hardware = sample_hardware
        self.hf_cache = hf_cache
        # Shared between screens and changed on the main thread only: workers hand their results
        # over with call_from_thread or a message. The Events are the one way across threads.
        self.background_stops: set[threading.Event] = set()
        """Set by quitting: each asks one background loop (a poll, a load, a start-up wait) to end."""
        self.server: StoppableServer | None = None
        self.server_pid: int | None = None
        self.quantize_cancel: threading.Event | None = None
        self.quantize_finished = threading.Event()
        self.bench_cancel: threading.Event | None = None
        """Set while a benchmark runs: setting it stops the benchmark (and the servers it started)."""
        # The first step is the mode the app opens in: Textual then mounts its screen directly, not an
        # empty default screen first and a switch after it (two more stylesheet passes before the
        # first frame). Set on the instance, since it depends on the steps offered.
        self.__dict__["DEFAULT_MODE"] = steps[0].mode
        super().__init__()
        self.set_reactive(
            QuantTuiApp.selection, Selection(hardware=hardware, model_reference=model, request=request)
        )
        self.set_reactive(QuantTuiApp.server_url, server_url)
        for step in self.screens_offered():
            # A step's module (and the Textual widgets it needs) is imported when the step is first
            # shown, so the first frame pays for the first screen only.
            self.add_mode(step.mode, step.new_screen)
        self.return_mode: str = self.steps[0].mode
        """Where the Bench screen's escape goes back to."""

    def screens_offered(self) -> tuple[Step, ...]:
        """The steps of the flow this app offers, then the Bench screen."""
        return (*self.steps, BENCH)

    def step_screens(self) -> dict[str, type[Screen[Any]]]:
        """The screen class of each screen this app offers, by mode name (imports them all)."""
        return {step.mode: step.screen_type() for step in self.screens_offered()}

    def on_mount(self) -> None:
        """Opens the first step."""
        self.switch_mode(self.steps[0].mode)

    def action_go(self, mode: str) -> None:
        """Shows a screen of the app.

        Args:
            mode: The screen's mode name.
        """
        if any(mode == step.mode for step in self.screens_offered()) and mode != self.current_mode:
            if mode == BENCH.mode:
                self.return_mode = self.current_mode
            self.switch_mode(mode)

    def action_bench(self) -> None:
        """Opens the Bench screen (from the plan or the dashboard)."""
        self.action_go(BENCH.mode)

    def add_background_stop(self, stop: threading.Event) -> None:
        """Registers a background loop's stop event, so quitting ends the loop (main thread)."""
        self.background_stops.add(stop)

    def discard_background_stop(self, stop: threading.Event) -> None:
        """Forgets a stop event whose loop has ended or been replaced (main thread)."""
        self.background_stops.discard(stop)

    def complete_step(self, mode: str) -> None:
        """Ticks a step in the step bar.

        Args:
            mode: The step's mode name.
        """
        self.done_steps = self.done_steps | {mode}

    def update_selection(self, **changes: Any) -> None:
        """Replaces fields of the selection; screens watching it redraw.

        Args:
            **changes: New values of :class:`Selection` fields.
        """
        self.selection = replace(self.selection, **changes)

    def action_help(self) -> None:
        """Opens the help screen listing every key."""
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.key_sections()))

    def key_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """Every key of the app and of each screen, with what it does, for the help screen."""
        sections: list[tuple[str, list[tuple[str, str]]]] = []
        everywhere = [(binding_keys(binding), binding_description(binding)) for binding in _bindings(self)]
        everywhere.append(("ctrl+p", "Command palette: the actions of the current screen"))
        sections.append(("Everywhere", everywhere))
        for mode, factory in self.step_screens().items():
            keys = [(binding_keys(b), binding_description(b)) for b in _class_bindings(factory)]
            sections.append((getattr(factory, "HELP_TITLE", "") or mode.title(), keys))
        return sections

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The command palette: the current screen's actions first, then the app's own commands."""
        for binding in _class_bindings(type(screen)):
            action = binding.action
            yield SystemCommand(
                binding_description(binding),
                f"key: {binding_keys(binding)}",
                partial(screen.run_action, action),
            )
        for step in self.steps:
            yield SystemCommand(f"Go to {step.label}", f"key: {step.key}", partial(self.action_go, step.mode))
        yield SystemCommand("Help", "Every key of every screen (key: ?)", self.action_help)
        yield from super().get_system_commands(screen)

    def show_error(self, title: str, error: BaseException, fix: str | None = None) -> None:
        """Shows an error dialog with cause and fix; the app keeps running.

        Args:
            title: What was being done.
            error: What was raised.
            fix: What to do, when the screen knows better than the error message.
        """
        report = describe_error(title, error)
        if fix is not None:
            report = ErrorReport(report.title, report.cause, fix)
        self.push_screen(ErrorDialog(report))

    def running_work(self) -> list[str]:
        """What runs in the background and would be stopped by quitting."""
        running = []
        if self.server is not None:
            pid = f" (pid {self.server_pid})" if self.server_pid else ""
            running.append(f"the vLLM server{pid}")
        if self.quantize_cancel is not None and not self.quantize_finished.is_set():
            running.append("a quantization")
        if self.bench_cancel is not None:
            running.append("a benchmark")
        return running

    async def action_quit(self) -> None:
        """Quits, asking first when a server or a quantization is running."""
        if isinstance(self.screen, QuitDialog):
            return  # already asking
        running = self.running_work()
        if not running:
            self.exit(0)
            return

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.notify("Stopping what runs, then quitting…", timeout=30)
                self._stop_and_exit()

        self.push_screen(QuitDialog(running), answered)

    def _stop_and_exit(self) -> None:
        stop = self.take_background_work()

        def stop_all() -> None:
            stop()
            self.call_from_thread(self.exit, 0)

        self.run_worker(stop_all, thread=True, name="stop-all", description="Stopping", exit_on_error=False)

    def take_background_work(self) -> StopWork:
        """Signals every background loop to end and forgets the server (main thread).

        Returns:
            What finishes the job (stops the server, waits for a quantization): slow, so call it
            from a thread when the app must stay responsive meanwhile.
        """
        server, self.server = self.server, None
        for stop in self.background_stops:
            stop.set()
        self.background_stops.clear()
        for cancel in (self.quantize_cancel, self.bench_cancel):
            if cancel is not None:
                cancel.set()
        waits_for_quantizer = self.quantize_cancel is not None
        finished = self.quantize_finished
        return StopWork(server, finished if waits_for_quantizer else None)

    def on_unmount(self) -> None:
        """A server this app started never outlives it, whatever way the app ends."""
        self.take_background_work()()


@dataclass(frozen=True)
class StopWork:
    """The slow half of stopping: the server's process tree and the quantizer's clean-up, waited for.

    Attributes:
        server: The server to stop, if one ran.
        quantize_finished: Set when the quantizer has cleaned up, if one ran.
    """

    server: StoppableServer | None
    quantize_finished: threading.Event | None

    def __call__(self) -> None:
        """Stops the server and waits (at most a minute) for the quantizer to remove its partial output."""
        if self.server is not None:
            self.server.stop()
        if self.quantize_finished is not None:
            self.quantize_finished.wait(timeout=60)


def binding_keys(binding: Binding) -> str:
    """The keys of a binding as the footer writes them (``?``, ``ctrl+q``, ``n``)."""
    names = []
    for key in binding.key.split(","):
        key = key.strip()
        names.append(
            {
                "question_mark": "?",
                "plus": "+",
                "minus": "-",
                "equals_sign": "=",
                "left_square_bracket": "[",
                "right_square_bracket": "]",
                "slash": "/",
            }.get(key, key)
        )
    return " / ".join(names)


def binding_description(binding: Binding) -> str:
    """What a binding does, in words."""
    return binding.tooltip or binding.description or binding.action


def _class_bindings(node_type: type) -> list[Binding]:
    bindings: list[Binding] = []
    for item in getattr(node_type, "BINDINGS", []):
        if isinstance(item, Binding):
            bindings.append(item)
        elif isinstance(item, tuple):
            bindings.append(Binding(*item))
    return bindings


def _bindings(app: App[Any]) -> list[Binding]:
    return _class_bindings(type(app))


def create_app(
    model: str = "demo",
    gpu: str | None = None,
    hardware: HardwareSnapshot | None = None,
    hf_cache: Path | None = None,
    request: PlanRequest | None = None,
) -> QuantTuiApp:
    """The guided app, as ``quant-tui`` opens it and as tests build it.

    Args:
        model: The model to start with: ``demo`` (default), a folder or a cached repo id.
        gpu: Plan for a catalogued GPU (``"H100x2"``) instead of this machine's.
        hardware: A fixed hardware snapshot instead of detecting this machine's (deterministic tests).
        hf_cache: The Hugging Face hub cache to look in (default: huggingface_hub's own).
        request: The plan knobs to start from (``quant-tui`` passes those set by vLLM's environment).
    """
    return QuantTuiApp(model=model, gpu=gpu, hardware=hardware, hf_cache=hf_cache, request=request)


def create_monitor_app(
    url: str, api_key: str | None = None, interval: float = 1.0, *, sample_hardware: bool = True
) -> QuantTuiApp:
    """The dashboard alone, watching a server this app did not start (``quant-tui monitor URL``).

    Args:
        url: The server's base URL, e.g. ``http://127.0.0.1:8000``.
        api_key: The server's API key, when it needs one.
        interval: Seconds between polls.
        sample_hardware: Whether to sample this machine's GPUs and host with each poll.

    Raises:
        engine.errors.QuantTuiError: The URL or the interval cannot work (checked before the app opens).
    """
    from engine.errors import QuantTuiError
    from engine.serve.client import metrics_url
    from engine.telemetry.poller import MIN_INTERVAL_S

    metrics_url(url)
    if not interval >= MIN_INTERVAL_S:
        raise QuantTuiError(f"the poll interval must be at least {MIN_INTERVAL_S} s, not {interval}")
    dashboard_only = tuple(step for step in STEPS if step.mode == "dashboard")
    return QuantTuiApp(
        steps=dashboard_only,
        server_url=url,
        api_key=api_key,
        interval=interval,
        sample_hardware=sample_hardware,
    )
