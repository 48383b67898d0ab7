"""BenchScreen: a concurrency sweep of the running server, or an A/B across methods, with a bar per variant, the table, plots and export."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, ProgressBar, Static

from tui.format import home_path
from tui.screens.base import StepScreen
from tui.widgets.bench_results import BenchPlot, BenchRow, BenchTable, ab_rows, sweep_rows, write_csv

if TYPE_CHECKING:
    from engine.bench.ab_result import BenchProgress, BenchResult
    from engine.bench.result import BenchRun
    from engine.bench.sweep import SweepResult

# The sweep: concurrency 1, 2, 4 against the running server, a few short requests per level.
SWEEP_MAX_CONCURRENCY = 4
SWEEP_REQUESTS_PER_USER = 4
SWEEP_PROMPT_TOKENS = 64
SWEEP_OUTPUT_TOKENS = 32
# The A/B: each method quantized (or reused), served in turn and given the same load.
AB_REQUESTS = 16
AB_CONCURRENCY = 4
# An A/B variant's stages in order, for its bar (the engine's BenchProgress.stage).
AB_STAGES = ("quantizing", "starting", "warming up", "load", "quality", "done")

BenchKind = Literal["sweep", "ab"]
# The result table's last column when an A/B measured lm-eval's task accuracy (as the CLI table has it).
ACCURACY_COLUMN = "task-accuracy"


class BenchCancelled(Exception):
    """The user cancelled the sweep between two levels."""


class BenchScreen(StepScreen):
    """The benchmark: a bar per variant while it runs, then vLLM's figures in a table and two plots."""

    MODE = "bench"
    HELP_TITLE = "Bench"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "sweep", "Sweep", tooltip="Sweep the running server's concurrency (1, 2, 4)"),
        Binding("a", "ab", "A/B", tooltip="Compare methods: quantize, serve and load each in turn"),
        Binding("x", "cancel", "Cancel", tooltip="Cancel the benchmark (its servers stop)"),
        Binding("e", "export", "Export", tooltip="Save the results as JSON or CSV to a path you pick"),
        Binding("escape", "back", "Back", tooltip="Back to the screen the bench was opened from"),
    ]

    @dataclass
    class VariantProgress(Message):
        """One variant moved on: ``done`` of ``total`` steps (requests, or A/B stages)."""

        index: int
        done: float
        total: float
        stage: str

    @dataclass
    class SweepDone(Message):
        """The sweep measured every level."""

        sweep: SweepResult

    @dataclass
    class ComparisonDone(Message):
        """The A/B measured every method."""

        result: BenchResult

    @dataclass
    class Stopped(Message):
        """The benchmark ended without a result (cancelled or failed)."""

        reason: str

    def __init__(self) -> None:
        """Creates the screen; nothing runs until s or a."""
        super().__init__()
        self.running: BenchKind | None = None
        self.rows: tuple[BenchRow, ...] = ()
        self.export_data: dict[str, object] | None = None
        """The last result as JSON-ready data (vLLM keys per run), for the export."""

    def compose_body(self) -> ComposeResult:
        """What runs, a bar per variant, the table, the plots and the export path."""
        yield Static("", id="bench-info")
        yield Vertical(id="bench-variants")
        yield BenchTable(id="bench-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="bench-plots"):
            yield BenchPlot("output tok/s", "output_throughput", id="bench-throughput")
            yield BenchPlot("p99 TTFT (ms)", "p99_ttft_ms", id="bench-ttft")
        yield Input(placeholder="path.json or path.csv, Enter saves", id="bench-path")

    def on_mount(self) -> None:
        """Says what s and a would run."""
        super().on_mount()
        self.query_one("#bench-path", Input).display = False
        self.watch(self.quant_app, "server_url", self._show_info, init=True)

    def _show_info(self, _url: object = None) -> None:
        url = self.quant_app.server_url
        model = self.selection.model
        text = Text()
        if url is not None:
            text.append("s ", style="bold")
            text.append(f"sweeps {url} at concurrency 1, 2, {SWEEP_MAX_CONCURRENCY}\n")
        else:
            text.append("s: no server to sweep (start one on the Serve step, 5)\n", style="dim")
        if model is not None:
            text.append("a ", style="bold")
            text.append(f"compares {', '.join(self._methods())} on {model.name} (minutes: each is served)")
        else:
            text.append("a: load a model (2) to compare methods", style="dim")
        self.query_one("#bench-info", Static).update(text)

    def _methods(self) -> tuple[str, ...]:
        from engine.bench.ab_result import BASELINE_METHOD, DEFAULT_METHODS

        chosen = self.selection.candidate
        if chosen is not None and chosen.method not in DEFAULT_METHODS and chosen.needs_quantization:
            return (BASELINE_METHOD, chosen.method)
        return DEFAULT_METHODS

    def _begin(self, kind: BenchKind, labels: tuple[str, ...], total: float) -> threading.Event | None:
        if self.running is not None:
            self.notify("A benchmark is already running (x cancels it).")
            return None
        cancel = threading.Event()
        self.quant_app.bench_cancel = cancel
        self.running = kind
        variants = self.query_one("#bench-variants", Vertical)
        variants.remove_children()
        variants.mount_all(
            Horizontal(
                Label(label, classes="bench-label"),
                ProgressBar(total=total, show_eta=False, id=f"bench-bar-{index}"),
                Label("waiting", id=f"bench-stage-{index}", classes="bench-stage"),
                classes="bench-variant",
            )
            for index, label in enumerate(labels)
        )
        return cancel

    def action_sweep(self) -> None:
        """Sweeps the running server: concurrency 1, 2, 4, the same short requests at each."""
        from engine.bench.sweep import concurrency_levels

        url = self.quant_app.server_url
        if url is None:
            self.notify("No server to sweep: start one on the Serve step (5).", severity="warning")
            return
        levels = concurrency_levels(SWEEP_MAX_CONCURRENCY)
        cancel = self._begin("sweep", tuple(f"c={level}" for level in levels), 1)
        if cancel is not None:
            self._sweep(url, levels, cancel)

    @work(thread=True, exclusive=True, group="bench", exit_on_error=False, description="Benchmarking")
    def _sweep(self, url: str, levels: tuple[int, ...], cancel: threading.Event) -> None:
        from engine.bench.load_result import LoadProgress
        from engine.bench.load_spec import LoadSpec
        from engine.bench.measure import measure_server
        from engine.bench.sweep import DEFAULT_SWEEP_SLO, run_sweep
        from engine.serve.client import served_model_name

        api_key = self.quant_app.api_key
        try:
            model = served_model_name(url, api_key)
            spec = LoadSpec(prompt_tokens=SWEEP_PROMPT_TOKENS, output_tokens=SWEEP_OUTPUT_TOKENS, model=model)

            def measure(concurrency: int) -> BenchRun:
                index = levels.index(concurrency)
                requests = SWEEP_REQUESTS_PER_USER * concurrency
                if cancel.is_set():
                    raise BenchCancelled
                self.post_message(self.VariantProgress(index, 0, requests, "load"))

                def progress(event: LoadProgress) -> None:
                    self.post_message(self.VariantProgress(index, event.finished, requests, "load"))

                run = measure_server(
                    url,
                    replace(spec, concurrency=concurrency, requests=requests),
                    api_key,
                    label=f"c={concurrency}",
                    on_progress=progress,
                    stop_event=cancel,
                )
                self.post_message(self.VariantProgress(index, requests, requests, "done"))
                return run

            # Every level is measured (no stop at the first miss): the curve is the point here.
            sweep = run_sweep(model, measure, levels, DEFAULT_SWEEP_SLO, stop_after_miss=False)
            if cancel.is_set():
                raise BenchCancelled
        except BenchCancelled:
            self.post_message(self.Stopped("cancelled"))
            return
        except BaseException as error:
            self.post_message(self.Stopped(f"failed: {' '.join(str(error).split())}"))
            raise
        self.post_message(self.SweepDone(sweep))

    def action_ab(self) -> None:
        """Compares methods on the chosen model: each quantized (or reused), served and loaded in turn."""
        model = self.selection.model
        if model is None:
            self.notify("Load a model first (2).", severity="warning")
            return
        methods = self._methods()
        cancel = self._begin("ab", methods, len(AB_STAGES))
        if cancel is not None:
            request = self.selection.request
            self._compare(model.path, methods, request.max_model_len if request else None, cancel)

    @work(thread=True, exclusive=True, group="bench", exit_on_error=False, description="Comparing methods")
    def _compare(
        self, model: Path, methods: tuple[str, ...], max_model_len: int | None, cancel: threading.Event
    ) -> None:
        from engine.bench.ab_result import BenchRequest
        from engine.bench.ab_runner import run_bench
        from engine.bench.load_spec import LoadSpec

        def progress(event: BenchProgress) -> None:
            done = len(AB_STAGES) if event.stage in ("done", "failed") else AB_STAGES.index(event.stage)
            stage = f"{event.stage}: {event.message}" if event.message else event.stage
            self.post_message(self.VariantProgress(event.index, done, len(AB_STAGES), stage))

        request = BenchRequest(
            model=model,
            methods=methods,
            load=LoadSpec(concurrency=AB_CONCURRENCY, requests=AB_REQUESTS),
            max_model_len=max_model_len,
        )
        try:
            result = run_bench(request, on_progress=progress, cancel=cancel)
        except BaseException as error:
            self.post_message(self.Stopped("cancelled" if cancel.is_set() else f"failed: {error}"))
            if cancel.is_set():
                return
            raise
        self.post_message(self.ComparisonDone(result))

    def on_bench_screen_variant_progress(self, message: VariantProgress) -> None:
        """Moves one variant's bar."""
        bars = self.query(f"#bench-bar-{message.index}").results(ProgressBar)
        for bar in bars:
            bar.update(total=max(message.total, 1), progress=message.done)
        for label in self.query(f"#bench-stage-{message.index}").results(Label):
            label.update(message.stage)

    def on_bench_screen_sweep_done(self, message: SweepDone) -> None:
        """Shows the sweep's levels, with the sentence on the knee."""
        from engine.bench.sweep import capacity_line

        line = capacity_line([message.sweep])
        self.export_data = {"kind": "sweep", "sweeps": [message.sweep.to_json()], "capacity": line}
        self._finish(sweep_rows(message.sweep), line)

    def on_bench_screen_comparison_done(self, message: ComparisonDone) -> None:
        """Shows each method's figures."""
        self.export_data = {"kind": "ab", **message.result.to_dict()}
        self._finish(ab_rows(message.result), f"A/B on {message.result.hardware}")
        self._show_accuracy(message.result)

    def _show_accuracy(self, result: BenchResult) -> None:
        """Adds lm-eval's figure per method as the table's last column, when the A/B measured one."""
        measured = [variant.task_accuracy for variant in result.variants if variant.task_accuracy is not None]
        if not measured:
            return
        table = self.query_one(BenchTable)
        table.add_column(measured[0].header(), key=ACCURACY_COLUMN, default="-")
        for row_key, variant in zip(table.rows, result.variants, strict=True):
            if variant.task_accuracy is not None and variant.run is not None:
                table.update_cell(row_key, ACCURACY_COLUMN, variant.task_accuracy.cell())

    def on_bench_screen_stopped(self, message: Stopped) -> None:
        """Says why the benchmark ended without a result."""
        self._ended()
        self.notify(f"Benchmark {message.reason}.", severity="warning", timeout=6)

    def _finish(self, rows: tuple[BenchRow, ...], summary: str) -> None:
        self._ended()
        self.rows = rows
        table = self.query_one(BenchTable)
        if ACCURACY_COLUMN in table.columns:
            table.remove_column(ACCURACY_COLUMN)
        table.show(rows)
        for plot in self.query(BenchPlot):
            plot.show(rows)
        self.query_one("#bench-info", Static).update(Text(summary + "\ne exports it as JSON or CSV."))

    def _ended(self) -> None:
        self.running = None
        self.quant_app.bench_cancel = None

    def action_cancel(self) -> None:
        """Cancels the benchmark; the A/B stops the server it started."""
        cancel = self.quant_app.bench_cancel
        if cancel is None:
            self.notify("No benchmark is running.")
            return
        cancel.set()
        self.notify("Cancelling the benchmark…")

    def action_export(self) -> None:
        """Asks where to save the results (``.csv`` for CSV, anything else JSON)."""
        if self.export_data is None:
            self.notify("Nothing to export yet: run a benchmark first (s or a).", severity="warning")
            return
        path = self.query_one("#bench-path", Input)
        if not path.value:
            path.value = str(Path.cwd() / f"quant-tui-bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
        path.display = True
        path.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Saves to the typed path."""
        event.stop()
        if self.export_data is None or not event.value.strip():
            return
        event.input.display = False
        self._export(Path(event.value.strip()).expanduser(), self.rows, self.export_data)

    @work(thread=True, group="bench-export", exit_on_error=False, description="Saving the benchmark")
    def _export(self, path: Path, rows: tuple[BenchRow, ...], data: dict[str, object]) -> None:
        from engine.bench.result import save_result

        written = write_csv(rows, path) if path.suffix.lower() == ".csv" else save_result(data, path)
        self.app.call_from_thread(self.notify, f"Saved {home_path(written)}", timeout=6)

    def action_back(self) -> None:
        """Leaves the path field, else goes back to where the bench was opened from."""
        path = self.query_one("#bench-path", Input)
        if path.display:
            path.display = False
            return
        self.quant_app.action_go(self.quant_app.return_mode)
