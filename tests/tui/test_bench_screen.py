"""Pilot tests of the Bench screen: reached from the plan and the dashboard, the result table, plots and export."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.binding import Binding
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from engine.bench.ab_result import BenchResult, VariantResult
from engine.bench.load_spec import LoadSpec
from engine.bench.result import BenchRun
from engine.bench.sweep import DEFAULT_SWEEP_SLO, run_sweep
from engine.bench.task_eval import TaskAccuracy
from tests.bench.test_sweep import synthetic_run
from tests.tui.test_tui_flow import SIZE, fixed_hardware, wait_for
from tui.app import create_app
from tui.screens.bench import BenchScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.plan import PlanScreen
from tui.widgets.bench_results import BenchPlot

BENCH_TOOLTIPS = {
    PlanScreen: "Benchmark: A/B across methods, or a sweep of the server",
    DashboardScreen: "Benchmark this server: a concurrency sweep, or A/B across methods",
}


def sweep_of_synthetic_runs() -> tuple[BenchRun, ...]:
    """Concurrency 1, 2, 4: four 11-token requests each, TTFT 100/200/400 ms, then ten gaps of 20/30/50 ms."""
    return (
        synthetic_run("demo", 1, 0.1, 0.02),
        synthetic_run("demo", 2, 0.2, 0.03),
        synthetic_run("demo", 4, 0.4, 0.05),
    )


async def test_b_opens_the_bench_from_the_plan_and_the_dashboard_and_escape_goes_back() -> None:
    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        for key, screen_type in (("3", PlanScreen), ("6", DashboardScreen)):
            await pilot.press(key)
            await wait_for(pilot, lambda screen_type=screen_type: isinstance(app.screen, screen_type))
            # In the command palette with the screen's other actions, described.
            titles = [command.title for command in app.get_system_commands(app.screen)]
            assert BENCH_TOOLTIPS[screen_type] in titles
            bench_keys = [
                b.key for b in screen_type.BINDINGS if isinstance(b, Binding) and b.action == "app.bench"
            ]
            assert bench_keys == ["b"]
            await pilot.press("b")
            await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen))
            await pilot.press("escape")
            await wait_for(pilot, lambda screen_type=screen_type: isinstance(app.screen, screen_type))


async def test_a_sweep_without_a_server_says_so_and_starts_nothing() -> None:
    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3", "b")
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen))
        bench = app.screen
        assert isinstance(bench, BenchScreen)
        await pilot.press("s")
        await pilot.pause()
        assert bench.running is None and app.bench_cancel is None and app.running_work() == []
        assert "no server to sweep" in str(bench.query_one("#bench-info").render())
        await pilot.press("e")  # nothing measured yet: nothing to export
        await pilot.pause()
        assert not bench.query_one("#bench-path", Input).display


async def test_a_finished_sweep_fills_the_table_and_plots_and_exports_csv_and_json(tmp_path: Path) -> None:
    runs = {run.load.spec.concurrency: run for run in sweep_of_synthetic_runs()}
    sweep = run_sweep("demo", runs.__getitem__, (1, 2, 4), DEFAULT_SWEEP_SLO, stop_after_miss=False)
    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6", "b")
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen))
        bench = app.screen
        assert isinstance(bench, BenchScreen)
        bench.post_message(BenchScreen.SweepDone(sweep))
        await wait_for(pilot, lambda: bench.query_one(DataTable).row_count == 3)
        table = bench.query_one(DataTable)
        # 4 requests × 11 tokens in 2 s: 22 tok/s; TPOT = ITL = the gap; p99 of four equal values is the value.
        assert table.get_row_at(0) == [
            "c=1",
            "22.0",
            "100.0",
            "100.0",
            "20.0",
            "20.0",
            "20.0",
            "20.0",
            "4",
            "0",
        ]
        assert table.get_row_at(2) == [
            "c=4",
            "22.0",
            "400.0",
            "400.0",
            "50.0",
            "50.0",
            "50.0",
            "50.0",
            "4",
            "0",
        ]
        assert "holds 4 concurrent users (the most tried)" in str(bench.query_one("#bench-info").render())
        ttft = bench.query_one("#bench-ttft", BenchPlot)
        assert "400" in str(ttft.render())  # the y axis reaches the slowest level

        for name in ("sweep.csv", "sweep.json"):
            await pilot.press("e")
            path = bench.query_one("#bench-path", Input)
            assert path.display and path.has_focus
            path.value = str(tmp_path / name)
            await pilot.press("enter")
            await wait_for(pilot, lambda name=name: (tmp_path / name).is_file(), timeout=30)
        with (tmp_path / "sweep.csv").open(encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert [(row["label"], row["max_concurrency"]) for row in rows] == [
            ("c=1", "1"),
            ("c=2", "2"),
            ("c=4", "4"),
        ]
        assert [float(row["median_ttft_ms"]) for row in rows] == [100.0, 200.0, 400.0]
        saved = json.loads((tmp_path / "sweep.json").read_text(encoding="utf-8"))
        assert saved["kind"] == "sweep"
        assert [point["max_concurrency"] for point in saved["sweeps"][0]["curve"]] == [1, 2, 4]
        assert not list(tmp_path.glob(".*.tmp"))  # written next to the target and renamed


def comparison(accuracies: dict[str, TaskAccuracy | None]) -> BenchResult:
    """An A/B of synthetic runs, one per method; a method with no run failed."""
    variants = tuple(
        VariantResult(method, None, run=synthetic_run(method, 4, 0.1, 0.02), task_accuracy=accuracy)
        if method != "failed"
        else VariantResult(method, None, error="the server did not start", task_accuracy=accuracy)
        for method, accuracy in accuracies.items()
    )
    return BenchResult(variants, LoadSpec(), "test box")


async def test_an_ab_shows_task_accuracy_in_its_table_only_when_measured() -> None:
    def accuracy(value: float, stderr: float | None) -> TaskAccuracy:
        return TaskAccuracy("demo_fluency", 20, 20, "acc,none", value, stderr, {"acc,none": value})

    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("6", "b")
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen))
        bench = app.screen
        assert isinstance(bench, BenchScreen)
        table = bench.query_one(DataTable)
        measured = {"bf16": accuracy(0.75, 0.0993), "int8-w8a8": accuracy(0.7, None), "fp8": None}
        measured["failed"] = accuracy(0.1, 0.01)  # a method that failed shows no figure
        bench.post_message(BenchScreen.ComparisonDone(comparison(measured)))
        await wait_for(pilot, lambda: table.row_count == 4)
        headers = [str(column.label) for column in table.columns.values()]
        assert headers[-1] == "demo_fluency acc (20)" and headers[-2] == "failed"
        assert [table.get_row_at(index)[-1] for index in range(4)] == ["0.750 ± 0.099", "0.700", "-", "-"]
        assert table.get_row_at(0)[1] == "22.0"  # the vLLM figures keep their columns

        # The next result without lm-eval drops the column; the same table, no stale figures.
        bench.post_message(BenchScreen.ComparisonDone(comparison({"bf16": None, "fp8": None})))
        await wait_for(pilot, lambda: table.row_count == 2)
        assert [str(column.label) for column in table.columns.values()][-1] == "failed"
        assert len(table.get_row_at(0)) == len(headers) - 1


def test_bench_screen_after_a_sweep(snap_compare: Callable[..., bool]) -> None:
    runs = {run.load.spec.concurrency: run for run in sweep_of_synthetic_runs()}
    sweep = run_sweep("demo", runs.__getitem__, (1, 2, 4), DEFAULT_SWEEP_SLO, stop_after_miss=False)

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        await pilot.press("6", "b")
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen))
        app.screen.post_message(BenchScreen.SweepDone(sweep))
        await wait_for(pilot, lambda: app.screen.query_one(DataTable).row_count == 3)
        await pilot.pause(0.2)

    app = create_app(gpu="H100", hardware=fixed_hardware())
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
