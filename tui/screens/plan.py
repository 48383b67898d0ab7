"""PlanScreen: the ranked recommendations, the chosen one's memory split, and knobs that recompute live."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, TypeVar

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import DataTable, Static

from engine.errors import QuantTuiError
from engine.plan.recommender import GOALS, Candidate, PlanRequest, Recommendation, recommend
from tui.cli.recommend_command import concurrency_text
from tui.format import gib, home_path, size
from tui.screens.base import StepScreen
from tui.screens.plan_settings import PlanSettingsDialog, settings_summary
from tui.widgets.memory_bar import MemoryBar, Segment

T = TypeVar("T")

CONTEXT_STEPS = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
CONCURRENCY_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTEXTS_SHOWN = 5
KV_CHOICES: tuple[str | None, ...] = (None, "auto", "fp8")
TP_CHOICES: tuple[int | None, ...] = (None, 1, 2, 4, 8)


def _step(values: tuple[int, ...], current: int, direction: int) -> int:
    """The next value up or down a ladder of choices."""
    if direction > 0:
        return next((value for value in values if value > current), values[-1])
    return next((value for value in reversed(values) if value < current), values[0])


def _cycle(values: tuple[T, ...], current: T) -> T:
    index = values.index(current) if current in values else -1
    return values[(index + 1) % len(values)]


def serve_command(candidate: Candidate) -> str:
    """The exact shell command that serves the candidate (environment first), paths as on disk.

    Rendered from the candidate's one server plan, the object the Serve screen starts.
    """
    return candidate.server.command_line()


def memory_segments(candidate: Candidate) -> tuple[Segment, ...]:
    """The stacked bar's parts: weights, KV cache, activations and runtime (on a GPU, vLLM's own terms)."""
    plan = candidate.plan
    gpu = plan.gpu_memory
    if gpu is not None:
        return (
            Segment("weights", gpu.weights_bytes, "█", "bold blue"),
            Segment("KV cache", gpu.kv_cache_bytes, "▓", "green"),
            Segment("activations", gpu.activation_peak_bytes, "▒", "yellow"),
            Segment("non-torch", gpu.non_torch_bytes, "░", "magenta"),
            Segment("CUDA graphs", gpu.cudagraph_bytes, "▚", "cyan"),
        )
    return (
        Segment("weights", plan.weights_bytes, "█", "bold blue"),
        Segment("KV cache", plan.kv_budget_bytes, "▓", "green"),
        Segment("activations", plan.overhead.activations, "▒", "yellow"),
        Segment("runtime", plan.overhead.runtime, "░", "magenta"),
    )


class PlanScreen(StepScreen):
    """Step 3: what to run, why, and whether it fits; every knob is a key and recomputes at once."""

    MODE = "plan"
    HELP_TITLE = "3 Plan"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "use", "Use", tooltip="Use the highlighted plan: quantize if needed, then serve"),
        Binding("right_square_bracket", "context(1)", "Ctx×2", tooltip="Double the context length"),
        Binding("left_square_bracket", "context(-1)", "Ctx÷2", tooltip="Halve the context length"),
        Binding("plus,equals_sign", "concurrency(1)", "Seqs+", tooltip="More concurrent sequences"),
        Binding("minus", "concurrency(-1)", "Seqs-", tooltip="Fewer concurrent sequences"),
        Binding("g", "goal", "Goal", tooltip="Cycle the goal: quality, balanced, memory, throughput"),
        Binding("k", "kv", "KV", tooltip="Cycle the KV cache dtype: planner's choice, 16-bit, FP8"),
        Binding("t", "tp", "TP", tooltip="Cycle the tensor-parallel size"),
        Binding(
            "o",
            "settings",
            "Options",
            tooltip="Set vLLM's serving options: GPU memory share, KV/model dtype, max sequences, batch, context",
        ),
        Binding("c", "copy", "Copy", tooltip="Copy the quantize and serve commands"),
        Binding("b", "app.bench", "Bench", tooltip="Benchmark: A/B across methods, or a sweep of the server"),
    ]

    request: reactive[PlanRequest] = reactive(PlanRequest)
    """The knobs."""

    def __init__(self) -> None:
        """Creates the screen; the plan is computed once hardware and model are known."""
        super().__init__()
        self.recommendation: Recommendation | None = None
        self._ready = False

    def compose_body(self) -> ComposeResult:
        """Knobs, the ranked table, the details of the highlighted row."""
        yield Static("", id="knobs")
        yield DataTable(id="candidates", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="plan-details"):
            yield MemoryBar(id="memory")
            yield Static("", id="plan-text")

    def on_mount(self) -> None:
        """Sets up the table and computes the plan."""
        super().on_mount()
        table = self.query_one("#candidates", DataTable)
        table.add_columns("#", "method", "runs as", "fits", "weights", "KV dtype", "TP", "max seqs")
        if self.selection.request is not None:
            self.set_reactive(PlanScreen.request, self.selection.request)
        self.watch(self.quant_app, "selection", self._selection_changed, init=False)
        self._ready = True
        self.recompute()
        table.focus()

    def _selection_changed(self, _selection: object) -> None:
        current = self.recommendation
        selection = self.selection
        if current is None or current.model != selection.model or current.hardware != selection.target:
            self.recompute()

    def watch_request(self) -> None:
        """Recomputes when a knob moves."""
        self.recompute()

    def recompute(self) -> None:
        """Runs the recommender (milliseconds) and redraws everything."""
        if not self._ready:
            return
        selection = self.selection
        knobs = self.query_one("#knobs", Static)
        table = self.query_one("#candidates", DataTable)
        if selection.model is None or selection.target is None:
            knobs.update("Pick the hardware (1) and load a model (2) first.")
            table.clear()
            self.recommendation = None
            self._show_details()
            return
        try:
            self.recommendation = recommend(selection.model, selection.target, self.request)
        except QuantTuiError as error:
            self.recommendation = None
            table.clear()
            self.quant_app.show_error("Planning", error)
            return
        self._show_knobs()
        keep = table.cursor_row
        table.clear()
        for rank, candidate in enumerate(self.recommendation.candidates, start=1):
            table.add_row(
                str(rank),
                candidate.method,
                candidate.execution,
                "yes" if candidate.fits else "NO",
                size(candidate.weights.total),
                candidate.kv_cache_dtype,
                str(candidate.tensor_parallel_size),
                concurrency_text(candidate.max_concurrency),
                key=candidate.method,
            )
        table.move_cursor(row=min(keep, len(self.recommendation.candidates) - 1))
        self._show_details()

    def _show_knobs(self) -> None:
        assert self.recommendation is not None
        request = self.request
        target = self.recommendation.hardware
        where = f"{target.count}× {target.name}" if target.kind == "gpu" else f"CPU ({target.name})"
        context = f"{self.recommendation.max_model_len:,}" + ("" if request.max_model_len else " (model max)")
        line = Text()
        line.append(f"{self.recommendation.model.name} on {where}\n", style="bold")
        line.append(
            f"ctx {context} [/]  seqs {request.concurrency} -/+  goal {request.goal} g  "
            f"KV {request.kv_cache_dtype or 'choose'} k  TP {request.tensor_parallel_size or 'auto'} t"
        )
        self.query_one("#knobs", Static).update(line)

    @property
    def highlighted(self) -> Candidate | None:
        """The candidate under the table's cursor."""
        if self.recommendation is None or not self.recommendation.candidates:
            return None
        row = self.query_one("#candidates", DataTable).cursor_row
        return self.recommendation.candidates[max(0, min(row, len(self.recommendation.candidates) - 1))]

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        """Shows the highlighted candidate."""
        self._show_details()

    def on_data_table_row_selected(self, _event: DataTable.RowSelected) -> None:
        """Enter on a row uses that plan."""
        self.action_use()

    def _show_details(self) -> None:
        bar = self.query_one("#memory", MemoryBar)
        text = self.query_one("#plan-text", Static)
        candidate = self.highlighted
        if candidate is None or self.recommendation is None:
            bar.segments = ()
            text.update("")
            return
        plan = candidate.plan
        bar.segments = memory_segments(candidate)
        # vLLM's requested share is ceil(total × utilization): the parts add up to exactly that.
        bar.capacity_bytes = plan.gpu_memory.requested_bytes if plan.gpu_memory else plan.usable_bytes
        per = "per GPU" if self.recommendation.hardware.kind == "gpu" else "of host RAM"
        bar.caption = (
            f"usable {gib(plan.usable_bytes)} = {plan.memory_utilization:.0%} of "
            f"{gib(plan.device_memory_bytes)} {per}"
        )
        lines: list[Text] = []
        fits = "FITS" if candidate.fits else "DOES NOT FIT"
        lines.append(
            Text(
                f"{fits}: {candidate.kv_cache_tokens:,} KV tokens = {concurrency_text(candidate.max_concurrency)} sequences of "
                f"{self.recommendation.max_model_len:,} tokens ({self.request.concurrency} asked)",
                style="bold",
            )
        )
        lines.append(Text(f"Max sequences by context: {self._fits_by_context(candidate)}"))
        lines.append(Text(f"Trade-off: {candidate.trade_off}"))
        lines.extend(Text(f"+ {reason}") for reason in candidate.reasons)
        lines.extend(Text(f"! {warning}", style="bold") for warning in candidate.warnings)
        lines.extend(Text(f"i {note}", style="italic") for note in self.recommendation.notes)
        if make_command := candidate.quantize_command(self.selection.model_reference):
            lines.append(Text("Make it:", style="bold underline"))
            lines.append(Text(make_command))
        summary = settings_summary(self.request)
        if summary:
            lines.append(Text(f"Options (o): {summary}", style="italic"))
        lines.append(Text("Serve it:", style="bold underline"))
        if candidate.cluster_steps:
            lines.append(Text(f"{self.recommendation.request.nodes} boxes joined by Ray, in this order:"))
            lines.extend(
                Text(f"[{step.where}] {home_path_words(step.command)}") for step in candidate.cluster_steps
            )
        else:
            lines.append(Text(home_command(candidate)))
        text.update(Group(*lines))

    def _fits_by_context(self, candidate: Candidate) -> str:
        """How many sequences of each context length the same method fits (the recommender, re-run)."""
        assert self.recommendation is not None
        model, target = self.recommendation.model, self.recommendation.hardware
        lengths = [length for length in CONTEXT_STEPS if length <= model.max_context][-CONTEXTS_SHOWN:]
        figures = []
        for length in lengths:
            request = replace(self.request, max_model_len=length)
            same = [c for c in recommend(model, target, request).candidates if c.method == candidate.method]
            if same:
                figures.append(
                    f"{length // 1024 if length >= 1024 else length}{'k' if length >= 1024 else ''}"
                    f" {concurrency_text(same[0].max_concurrency)}"
                )
        return " · ".join(figures)

    def action_context(self, direction: int) -> None:
        """Halves or doubles the context length.

        Args:
            direction: +1 to double, -1 to halve.
        """
        current = self.request.max_model_len or (
            self.recommendation.max_model_len if self.recommendation else 4096
        )
        self.request = replace(self.request, max_model_len=_step(CONTEXT_STEPS, current, direction))

    def action_concurrency(self, direction: int) -> None:
        """Asks for more or fewer sequences at once.

        Args:
            direction: +1 for more, -1 for fewer.
        """
        self.request = replace(
            self.request, concurrency=_step(CONCURRENCY_STEPS, self.request.concurrency, direction)
        )

    def action_goal(self) -> None:
        """Cycles the goal: quality, balanced, memory, throughput."""
        self.request = replace(self.request, goal=_cycle(GOALS, self.request.goal))

    def action_kv(self) -> None:
        """Cycles the KV cache dtype: let the planner choose, 16-bit (auto), FP8."""
        self.request = replace(self.request, kv_cache_dtype=_cycle(KV_CHOICES, self.request.kv_cache_dtype))

    def action_tp(self) -> None:
        """Cycles the tensor-parallel size: automatic, then 1, 2, 4, 8 up to the GPU count."""
        count = self.selection.target.count if self.selection.target else 1
        choices = tuple(choice for choice in TP_CHOICES if choice is None or choice <= count)
        self.request = replace(
            self.request, tensor_parallel_size=_cycle(choices, self.request.tensor_parallel_size)
        )

    def action_settings(self) -> None:
        """Opens every serving option as a field; the plan is re-made from what is applied."""

        def applied(request: PlanRequest | None) -> None:
            if request is not None:
                self.request = request

        self.app.push_screen(PlanSettingsDialog(self.request), applied)

    def action_copy(self) -> None:
        """Copies the serve command, or a plan across boxes' Ray steps (the quantize command first, when needed)."""
        candidate = self.highlighted
        if candidate is None:
            return
        commands = [step.command for step in candidate.cluster_steps] or [serve_command(candidate)]
        if make_command := candidate.quantize_command(self.selection.model_reference):
            commands.insert(0, make_command)
        self.app.copy_to_clipboard("\n".join(commands))
        self.notify("Copied the command to the clipboard (OSC 52).", timeout=3)

    def action_use(self) -> None:
        """Uses the highlighted plan: on to quantize when it needs a new checkpoint, else to serve."""
        candidate = self.highlighted
        if candidate is None:
            return
        from pathlib import Path

        serve_dir = None if candidate.needs_quantization else Path(candidate.model_dir)
        self.quant_app.update_selection(request=self.request, candidate=candidate, serve_dir=serve_dir)
        self.quant_app.complete_step("plan")
        self.quant_app.action_go("quantize" if candidate.needs_quantization else "serve")


def home_command(candidate: Candidate) -> str:
    """The serve command as shown on screen: the home folder written as ``~``."""
    return home_path_words(serve_command(candidate))


def home_path_words(command: str) -> str:
    """A command with each word that is a path in the home folder written with ``~``."""
    return " ".join(home_path(part) for part in command.split(" "))
