"""QuantizeScreen: make the chosen plan's checkpoint, with live progress, a log, cancel, and the result."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Log, ProgressBar, Static

from tui.format import home_path, seconds, size
from tui.screens.base import StepScreen

if TYPE_CHECKING:
    from engine.quantize.estimate import CostEstimate
    from engine.quantize.request import QuantizeProgress, QuantizeReport, QuantizeRequest

WORST_LAYERS_SHOWN = 2


def progress_figures(event: QuantizeProgress) -> Text:
    """Tensors, bytes, rate and ETA on one line; peak memory and the current tensor on the next."""
    line = Text()
    line.append(f"{event.stage}: ", style="bold")
    line.append(
        f"{event.tensors_done}/{event.tensors_total} tensors, {size(event.bytes_done)}/{size(event.bytes_total)}"
        f" at {size(event.rate_bytes_per_s)}/s, ETA {seconds(event.eta_s)}\n"
    )
    line.append(f"peak RAM {size(event.peak_rss_bytes)}  now: {event.current_tensor or '-'}", style="dim")
    return line


def cost_text(cost: CostEstimate) -> Text:
    """The dry run's figures on two lines, as ``quant-tui quantize --dry-run`` prints them: RAM, disk, time."""
    text = Text()
    text.append("Needs (dry run): ", style="bold")
    text.append(
        f"peak RAM {size(cost.peak_ram_bytes)} of {size(cost.available_ram_bytes)} available, "
        f"disk {size(cost.disk_bytes)} of {size(cost.free_disk_bytes)} free, about {seconds(cost.seconds)}\n"
    )
    if cost.refusal is None:
        text.append(f"fits; {cost.memory_model}", style="dim")
    else:
        text.append(f"DOES NOT FIT: {cost.refusal}", style="bold")
    return text


def report_text(report: QuantizeReport) -> Group:
    """The result: where it went, how much smaller, and how far the worst layers moved."""
    from engine.quantize.report import error_summary

    lines = [
        Text(f"DONE: {report.method} checkpoint in {home_path(report.output)}", style="bold"),
        Text(
            f"size {size(report.input_bytes)} → {size(report.output_bytes)} ({report.ratio:.2f}× smaller), "
            f"{report.tensors_quantized} Linear weights quantized, {report.tensors_copied} copied"
        ),
    ]
    if report.layer_errors:
        lines.append(Text(f"Quality check (weight reconstruction): {error_summary(report.layer_errors)}"))
        for layer in report.layer_errors[:WORST_LAYERS_SHOWN]:
            lines.append(
                Text(
                    f"  worst: {layer.name}  rel. error {layer.relative_error:.4f}  SNR {layer.snr_db:.1f} dB"
                )
            )
    lines.append(Text("Press n to serve it. `quant-tui bench` measures perplexity against the original."))
    return Group(*lines)


class QuantizeScreen(StepScreen):
    """Step 4: quantize in a background thread; cancelling leaves nothing half-written."""

    MODE = "quantize"
    HELP_TITLE = "4 Quantize"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "start", "Start", tooltip="Start quantizing the model with the chosen method"),
        Binding("x", "cancel", "Cancel", tooltip="Cancel the run; nothing half-written is left"),
        Binding("n", "next", "Next: serve", tooltip="Go on to serving the quantized model"),
    ]

    @dataclass
    class Progress(Message):
        """The quantizer reported progress."""

        progress: QuantizeProgress

    @dataclass
    class Finished(Message):
        """The quantizer finished."""

        report: QuantizeReport

    @dataclass
    class Stopped(Message):
        """The run ended without a checkpoint (cancelled or failed)."""

        reason: str

    @dataclass
    class Estimated(Message):
        """The dry run worked out what the run would need (or why it cannot be estimated)."""

        request: QuantizeRequest
        cost: CostEstimate | None
        error: str | None = None

    def compose_body(self) -> ComposeResult:
        """What will be made, the progress, the log and the result."""
        yield Static("", id="quantize-info")
        yield Static("", id="quantize-cost")
        yield ProgressBar(id="quantize-progress", show_eta=False)
        yield Static("Press s to start.", id="quantize-figures")
        yield Log(id="quantize-log", max_lines=500)
        yield Static("", id="quantize-result")

    def on_mount(self) -> None:
        """Shows what the chosen plan asks for."""
        super().on_mount()
        self.running = False
        self.made_here: Path | None = None
        self.cost: CostEstimate | None = None
        """The dry run of the request on screen, once worked out."""
        self._estimated_for: QuantizeRequest | None = None
        self.query_one("#quantize-progress", ProgressBar).display = False
        self.query_one("#quantize-log", Log).border_title = "log"
        self.watch(self.quant_app, "selection", self._show_info, init=True)

    def request(self) -> QuantizeRequest | None:
        """The quantization the chosen plan asks for, or None when there is none to make here."""
        from engine.plan.methods import default_output_dir
        from engine.quantize.request import METHODS, QuantizeRequest

        selection = self.selection
        candidate = selection.candidate
        if selection.model is None or candidate is None or not candidate.needs_quantization:
            return None
        if candidate.quantize_refusal is not None:  # quant-tui quantize would refuse this model
            return None
        if candidate.method not in METHODS:
            return None
        return QuantizeRequest(
            source=selection.model.path,
            method=candidate.method,
            output=default_output_dir(selection.model.path, candidate.method),
        )

    def _show_info(self, _selection: object = None) -> None:
        info = self.query_one("#quantize-info", Static)
        candidate = self.selection.candidate
        request = self.request()
        if request != self._estimated_for:
            self._estimated_for, self.cost = None, None
            self.query_one("#quantize-cost", Static).update("")
        if candidate is None or self.selection.model is None:
            info.update("Choose a plan first (3): the plan says which method to quantize with.")
            return
        if not candidate.needs_quantization:
            info.update(
                f"The chosen plan ({candidate.method}) serves the model as it is: nothing to quantize. Press n."
            )
            return
        if request is None or request.output is None:
            from engine.plan.make_it import make_it_line

            path, refusal = str(self.selection.model.path), candidate.quantize_refusal
            reason = make_it_line(candidate.method, path, refusal=refusal)
            info.update(
                f"{reason}."
                if refusal
                else f"quant-tui does not make {candidate.method} checkpoints: {reason}."
            )
            return
        text = Text()
        text.append("Quantize ", style="bold")
        text.append(f"{self.selection.model.name} with {candidate.method}\n")
        text.append(f"from {home_path(request.source)}\nto   {home_path(request.output)}")
        if request.output == self.made_here:
            text.append("\nMade: press n to serve it.", style="bold")
        elif (request.output / "config.json").is_file() and not self.running:
            text.append(
                "\nAlready made: press n to serve it (delete the folder to make it again).", style="bold"
            )
        elif not self.running and self._estimated_for != request:
            self._estimated_for = request
            self.query_one("#quantize-cost", Static).update(Text("Needs (dry run): estimating…", style="dim"))
            self._estimate(request)
        info.update(text)

    @work(
        thread=True, exclusive=True, group="estimate", exit_on_error=False, description="Estimating the cost"
    )
    def _estimate(self, request: QuantizeRequest) -> None:
        # Off the UI thread: the dry run reads the checkpoint's headers and plans the work.
        from engine.errors import QuantTuiError
        from engine.quantize.estimate import estimate

        try:
            self.post_message(self.Estimated(request, estimate(request)))
        except QuantTuiError as error:
            self.post_message(self.Estimated(request, None, str(error)))

    def on_quantize_screen_estimated(self, message: Estimated) -> None:
        """Shows what the run would need, before it starts."""
        if message.request != self._estimated_for:
            return  # the plan changed meanwhile
        self.cost = message.cost
        cost = self.query_one("#quantize-cost", Static)
        if message.cost is None:
            cost.update(Text(f"Needs (dry run): cannot tell ({message.error})", style="dim"))
        else:
            cost.update(cost_text(message.cost))

    def action_start(self) -> None:
        """Starts quantizing in a thread."""
        if self.running:
            self.notify("Already quantizing.")
            return
        request = self.request()
        if request is None:
            self._show_info()
            self.notify("Nothing to quantize for the chosen plan.", severity="warning")
            return
        if self.cost is not None and self.cost.refusal is not None and self._estimated_for == request:
            self.notify(f"Not started: {self.cost.refusal}", severity="error", timeout=10)
            return
        cancel = threading.Event()
        self.quant_app.quantize_cancel = cancel
        self.quant_app.quantize_finished.clear()
        self.running = True
        bar = self.query_one("#quantize-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self.query_one("#quantize-result", Static).update("")
        self.query_one("#quantize-log", Log).write_line(
            f"starting {request.method} → {home_path(request.output or '')}"
        )
        self._quantize(request, cancel)

    @work(thread=True, exclusive=True, group="quantize", exit_on_error=False, description="Quantizing")
    def _quantize(self, request: QuantizeRequest, cancel: threading.Event) -> None:
        # Imported here: the quantizer pulls in torch, which the app must not load before it is needed.
        from engine.quantize.runner import QuantizeCancelled, preflight, quantize_model

        try:
            preflight(request)
            report = quantize_model(request, on_progress=self._report_progress, cancel=cancel)
        except QuantizeCancelled as cancelled:
            self.post_message(self.Stopped(str(cancelled)))
            return
        except BaseException as error:
            self.post_message(self.Stopped(f"failed: {error}"))
            raise
        finally:
            self.quant_app.quantize_finished.set()
        self.post_message(self.Finished(report))

    def _report_progress(self, event: QuantizeProgress) -> None:
        self.post_message(self.Progress(event))

    def on_quantize_screen_progress(self, message: Progress) -> None:
        """Moves the bar and the figures; stage changes go to the log."""
        event = message.progress
        bar = self.query_one("#quantize-progress", ProgressBar)
        bar.update(total=max(event.bytes_total, 1), progress=event.bytes_done)
        self.query_one("#quantize-figures", Static).update(progress_figures(event))
        # The end is logged once, with the result, by on_quantize_screen_finished.
        if event.stage != "done" and event.message and event.message != getattr(self, "_last_message", None):
            self._last_message = event.message
            self.query_one("#quantize-log", Log).write_line(f"{event.stage}: {event.message}")

    def on_quantize_screen_finished(self, message: Finished) -> None:
        """Shows the result and makes it the model to serve."""
        self.running = False
        report = message.report
        self.made_here = Path(report.output)
        self.query_one("#quantize-result", Static).update(report_text(report))
        self.query_one("#quantize-log", Log).write_line(f"done: {home_path(report.output)}")
        self.quant_app.update_selection(serve_dir=Path(report.output))
        self.quant_app.complete_step("quantize")

    def on_quantize_screen_stopped(self, message: Stopped) -> None:
        """Logs why the run ended without a checkpoint."""
        self.running = False
        self.query_one("#quantize-log", Log).write_line(message.reason)
        self.query_one("#quantize-figures", Static).update(Text(f"STOPPED: {message.reason}", style="bold"))

    def action_cancel(self) -> None:
        """Asks the quantizer to stop; it removes its partial output."""
        cancel = self.quant_app.quantize_cancel
        if not self.running or cancel is None:
            self.notify("Nothing is being quantized.")
            return
        cancel.set()
        self.query_one("#quantize-log", Log).write_line("cancelling…")

    def action_next(self) -> None:
        """Goes on to serving; an already made checkpoint is used."""
        request = self.request()
        made = (
            request is not None and request.output is not None and (request.output / "config.json").is_file()
        )
        if self.selection.serve_dir is None and made and request is not None:
            self.quant_app.update_selection(serve_dir=request.output)
            self.quant_app.complete_step("quantize")
        self.quant_app.action_go("serve")
