"""The Bench screen's results: one row per variant under vLLM's result keys, the table, the plots and the CSV/JSON export."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.widgets import DataTable
from textual_plotext import PlotextPlot

from tui.format import compact_number

if TYPE_CHECKING:
    from engine.bench.ab_result import BenchResult
    from engine.bench.result import BenchRun
    from engine.bench.sweep import SweepResult

# (column header, vLLM result key): the figures `vllm bench serve` prints, in its order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("out tok/s", "output_throughput"),
    ("TTFT p50", "median_ttft_ms"),
    ("TTFT p99", "p99_ttft_ms"),
    ("TPOT p50", "median_tpot_ms"),
    ("TPOT p99", "p99_tpot_ms"),
    ("ITL p50", "median_itl_ms"),
    ("ITL p99", "p99_itl_ms"),
    ("ok", "completed"),
    ("failed", "failed"),
)


@dataclass(frozen=True, slots=True)
class BenchRow:
    """One measured variant (a method of the A/B, or a concurrency level of the sweep).

    Attributes:
        label: What was measured (``int8-w8a8``, ``c=4``).
        figures: Its summary under vLLM's result keys (``output_throughput``, ``median_ttft_ms`` …).
        concurrency: The concurrency it ran at (the sweep's x axis).
        error: Why it could not be measured, else ``None``.
    """

    label: str
    figures: Mapping[str, Any] = field(default_factory=dict)
    concurrency: int | None = None
    error: str | None = None


def _run_row(label: str, run: BenchRun) -> BenchRow:
    return BenchRow(label, run.summary.to_vllm_json(), run.load.spec.concurrency)


def sweep_rows(sweep: SweepResult) -> tuple[BenchRow, ...]:
    """One row per concurrency level of a sweep."""
    return tuple(_run_row(f"c={point.load.spec.concurrency}", point) for point in sweep.points)


def ab_rows(result: BenchResult) -> tuple[BenchRow, ...]:
    """One row per method of an A/B comparison; a method that failed keeps its error."""
    rows = []
    for variant in result.variants:
        if variant.run is None:
            rows.append(BenchRow(variant.method, error=variant.error or "not measured"))
        else:
            row = _run_row(variant.method, variant.run)
            rows.append(BenchRow(row.label, row.figures, row.concurrency, variant.error))
    return tuple(rows)


def cell(value: Any) -> str:
    """A figure as the table writes it: one decimal, whole counts as integers, a dash when unknown."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.1f}"


def csv_text(rows: Sequence[BenchRow]) -> str:
    """The rows as CSV: the label, the concurrency, the error, then every vLLM key any row has."""
    keys: list[str] = []
    for row in rows:
        keys.extend(key for key in row.figures if key not in keys)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["label", "max_concurrency", "error", *keys])
    for row in rows:
        writer.writerow(
            [row.label, row.concurrency, row.error or "", *(row.figures.get(key) for key in keys)]
        )
    return out.getvalue()


def write_csv(rows: Sequence[BenchRow], path: Path) -> Path:
    """Writes :func:`csv_text` next to ``path`` and renames it there, so nothing is ever half-written.

    Raises:
        engine.errors.QuantTuiError: The folder cannot be written.
    """
    from engine.errors import QuantTuiError

    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(csv_text(rows), encoding="utf-8")
        temporary.replace(path)
    except OSError as error:
        raise QuantTuiError(f"cannot write {path} ({error.strerror})", "pick another path") from error
    return path


class BenchTable(DataTable[str]):
    """The result table: one row per variant, vLLM's figures (ms for latencies) in columns."""

    DEFAULT_CSS = """
    BenchTable {
        height: auto;
        max-height: 7;
    }
    """

    def on_mount(self) -> None:
        """Adds the columns."""
        self.add_columns("variant", *(header for header, _ in COLUMNS))

    def show(self, rows: Sequence[BenchRow]) -> None:
        """Replaces the rows."""
        self.clear()
        for row in rows:
            if row.error and not row.figures:
                self.add_row(row.label, f"failed: {row.error}", *("" for _ in COLUMNS[1:]))
            else:
                self.add_row(row.label, *(cell(row.figures.get(key)) for _, key in COLUMNS))


class BenchPlot(PlotextPlot):
    """One figure of every variant: bars for an A/B, a line against concurrency for a sweep."""

    DEFAULT_CSS = """
    BenchPlot {
        width: 1fr;
        height: 1fr;
        min-height: 6;
        border: round $primary 50%;
        border-title-align: left;
    }
    """

    def __init__(self, title: str, key: str, *, id: str | None = None) -> None:
        """Creates an empty plot.

        Args:
            title: What it shows, with its unit (the border title).
            key: The vLLM result key it plots.
            id: The widget id.
        """
        super().__init__(id=id)
        self.key = key
        self.border_title = title
        self._rows: tuple[BenchRow, ...] = ()

    def show(self, rows: Sequence[BenchRow]) -> None:
        """Plots the rows (only when they changed)."""
        if tuple(rows) == self._rows:
            return
        self._rows = tuple(rows)
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        known = [row for row in rows if row.figures.get(self.key) is not None]
        if known:
            values = [float(row.figures[self.key]) for row in known]
            top = max(values)
            if all(row.concurrency is not None for row in known) and len({r.concurrency for r in known}) > 1:
                levels = [float(row.concurrency or 0) for row in known]
                plt.plot(levels, values, marker="braille")
                plt.xticks(levels, [str(int(level)) for level in levels])
                plt.xlabel("concurrent requests")
            else:
                plt.bar([row.label for row in known], values)
            plt.ylim(0, top * 1.1 if top > 0 else 1)
            plt.title(f"best {compact_number(top)}")
        self.refresh()
