"""The dashboard: time-series graphs with gaps and units, per-GPU and host panels, and a server that dies."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.telemetry.history import series_of
from tests.telemetry.test_poller import FakeMetricsEndpoint, endpoint  # noqa: F401 (the fixture)
from tests.tui.telemetry_data import history
from tests.tui.test_tui_flow import fixed_hardware, screen_text, wait_for
from tui.app import QuantTuiApp, create_app
from tui.screens.dashboard import DashboardScreen
from tui.widgets.device_panel import DevicePanel
from tui.widgets.graphs import GPU_MEMORY, GRAPHS, HOST_MEMORY, SERVER_MEMORY, GraphSpec, Line, plotext_color
from tui.widgets.time_plot import TimePlot, nice_top, runs

FIXTURES = Path(__file__).parents[1] / "fixtures"
BRAILLE_DOTS = {chr(code) for code in range(0x2801, 0x2900)}


def graph(spec_id: str) -> GraphSpec:
    return next(spec for spec in GRAPHS if spec.id == spec_id)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, 2.0, 3.0], [([0.0, 1.0, 2.0], [1.0, 2.0, 3.0])]),
        ([1.0, None, 2.0, 3.0, None], [([0.0], [1.0]), ([2.0, 3.0], [2.0, 3.0])]),
        ([None, None, None], []),
        ([None, 5.0, float("nan")], [([1.0], [5.0])]),
    ],
)
def test_a_missing_sample_splits_the_line(values: list[float | None], expected: list[object]) -> None:
    times = [float(index) for index in range(len(values))]
    assert runs(times, values) == expected


@pytest.mark.parametrize(
    ("highest", "top"),
    [
        (0.0, 1.0),
        (0.7, 0.8),
        (13.0, 15.0),
        (100.0, 100.0),
        (567.0, 600.0),
        (2401.0, 2500.0),
        (7100.0, 8000.0),
    ],
)
def test_the_y_axis_ends_at_a_round_number_above_the_data(highest: float, top: float) -> None:
    assert nice_top(highest) == pytest.approx(top)


@pytest.mark.parametrize(
    ("spec_id", "latest", "title"),
    [
        (
            "throughput",
            {"generation_tokens_per_s": 873.2, "prompt_tokens_per_s": 2412.0},
            "Throughput [green]gen[/] 873 [cyan]prompt[/] 2.4k tok/s",
        ),
        ("kv", {"kv_cache_usage": 0.5, "kv_cache_capacity_tokens": 287_344}, "KV cache 50% · 144k/287k tok"),
        ("ttft", {"ttft_p50_s": 0.075, "ttft_p95_s": 0.161}, "TTFT [green]p50[/] 75 [red]p95[/] 161 ms"),
        ("preempt", {"preemptions_per_s": 0.0, "preemptions_total": 3.0}, "Preemptions 0/s · 3 total"),
        ("prefix", {}, "Prefix cache hits -"),
    ],
)
def test_a_graph_title_carries_the_latest_values_in_units(
    spec_id: str, latest: dict[str, float], title: str
) -> None:
    assert graph(spec_id).title_text(latest) == title


def plot_dots(plot: TimePlot) -> int:
    """How many braille cells with a dot the plot draws."""
    return sum(1 for character in plot.render().plain if character in BRAILLE_DOTS)  # type: ignore[union-attr]


# The 16 terminal colours by number, as ANSI numbers them (0-7, and 8-15 bright).
TERMINAL_COLOR_NUMBERS = {"red": 1, "green": 2, "yellow": 3, "blue": 4, "magenta": 5, "cyan": 6, "white": 7}


@pytest.mark.parametrize(
    "line",
    [line for spec in (*GRAPHS, GPU_MEMORY, SERVER_MEMORY, HOST_MEMORY) for line in spec.lines],
    ids=lambda line: f"{line.series}-{line.color}",
)
def test_each_line_is_drawn_in_the_colour_its_title_names(line: Line) -> None:
    from plotext._dict import color_codes
    from rich.color import Color

    color = line.color
    number = TERMINAL_COLOR_NUMBERS[color]
    assert Color.parse(color).number == number
    # plotext replaces a name it does not know with another colour: the name it is given must be its own.
    assert color_codes[plotext_color(color)] == number


@pytest.mark.parametrize(
    ("size", "gpus", "rows", "first_row"),
    [
        ((120, 40), 8, 8, "GPU0 ▕"),
        ((80, 24), 8, 4, "0▕"),
        ((120, 40), 2, 2, "GPU0 ▕"),
        ((80, 24), 2, 2, "GPU0 ▕"),
    ],
)
async def test_gpu_panels_fit_the_terminal(
    size: tuple[int, int], gpus: int, rows: int, first_row: str
) -> None:
    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=size) as pilot:
        await pilot.press("6")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), timeout=30)
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        snapshots = history(gpu_count=gpus)
        screen.draw(snapshots[-1], series_of(snapshots))
        await pilot.pause(0.2)
        panel = screen.query_one(DevicePanel)
        lines = [line.plain for line in panel.layout_lines(panel.size.width)]
        assert len(lines) == rows and panel.size.height == rows
        assert lines[0].startswith(first_row)
        text = "\n".join(lines)
        for index in range(gpus):  # every GPU is on screen, none cut off
            assert (f"GPU{index} " if first_row.startswith("GPU") else f"{index}▕") in text
        if first_row.startswith("GPU"):
            # The last GPU of the fake data: 71 of 79.6 GiB used, 65 GiB of it vLLM's; GPU 1 draws
            # 345 of 700 W at 59 °C, GPU 7 615 W at 83 °C.
            power, temperature = {2: ("345/700 W", "59°C"), 8: ("615/700 W", "83°C")}[gpus]
            assert "71.0/79.6 GiB vLLM 65.0" in lines[-1] and power in lines[-1] and temperature in lines[-1]
        assert "vLLM holds" in str(panel.border_title)
        # The graphs keep a readable height under the GPU rows.
        assert all(plot.size.height >= 4 for plot in screen.query(TimePlot))


async def test_the_cpu_backend_shows_the_host_and_the_server_tree() -> None:
    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("6")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), timeout=30)
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        snapshots = history(gpu_count=0)
        screen.draw(snapshots[-1], series_of(snapshots))
        await pilot.pause(0.2)
        panel = screen.query_one(DevicePanel)
        lines = [line.plain for line in panel.layout_lines(panel.size.width)]
        assert lines[0].startswith("Host ") and "RAM 128.0/512.0 GiB" in lines[0] and "CPU 23%" in lines[0]
        assert "4242 api_server" in lines[1] and "4301 VLLM::EngineCore" in lines[2] and "97%" in lines[2]
        memory = screen.query_one("#graph-memory", TimePlot)
        assert memory.spec.title == "Server memory"


async def test_failed_polls_draw_nothing_and_a_single_sample_draws_one_point() -> None:
    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), timeout=30)
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        failed = history(ticks=5, failed=(0, 1, 2, 3, 4))
        screen.draw(failed[-1], series_of(failed))
        await pilot.pause(0.2)
        plots = list(screen.query(TimePlot))
        assert len(plots) == 8
        for plot in plots:
            if plot.spec.id != "memory":  # the host's RAM is still sampled when the server is not
                assert plot_dots(plot) == 0, plot.spec.id
        assert "POLL FAILED" in screen_text(app, "#dashboard-status")
        one = history(ticks=6, failed=(0, 1, 2, 3, 4))
        screen.draw(one[-1], series_of(one))
        await pilot.pause(0.2)
        requests = screen.query_one("#graph-requests", TimePlot)
        # One sample of two lines (running, waiting): at most one cell each, not a column.
        assert 1 <= plot_dots(requests) <= 2
        # A gap in the middle of a history splits the line at the failed polls.
        full = history(ticks=90, failed=(50, 51))
        screen.draw(full[-1], series_of(full))
        await pilot.pause(0.2)
        throughput = screen.query_one("#graph-throughput", TimePlot)
        generation_runs = throughput._stretches[0][1]
        assert [len(xs) for xs, _ in generation_runs] == [50, 38]


class DyingServer:
    """A real process standing in for a server quant-tui started, with a real log of a killed engine."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        self.log_tail = (FIXTURES / "log_cpu_engine_core_killed.log").read_text().splitlines()[-200:]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


async def test_a_server_that_dies_is_named_within_two_polls_with_its_diagnosis(
    endpoint: tuple[FakeMetricsEndpoint, str],  # noqa: F811
) -> None:
    _, url = endpoint
    server = DyingServer()
    app = QuantTuiApp(gpu="H100", hardware=fixed_hardware(), interval=0.2, sample_hardware=False)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            app.server, app.server_pid = server, server.pid
            app.server_url = url
            await pilot.press("6")
            await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), timeout=30)
            screen = app.screen
            assert isinstance(screen, DashboardScreen)
            await wait_for(
                pilot, lambda: screen.poller is not None and len(screen.poller.snapshots()) >= 3, 30
            )
            assert screen.death is None
            killed_at = time.time()
            server.process.kill()
            server.process.wait()
            await wait_for(pilot, lambda: screen.death is not None, timeout=30)
            assert screen.poller is not None
            after = [snapshot for snapshot in screen.poller.snapshots() if snapshot.wall_time >= killed_at]
            assert len(after) <= 2
            status = screen_text(app, "#dashboard-status")
            assert status.startswith("the vLLM engine process died")
            assert "500" not in status
            assert "killed from outside, often by the out-of-memory killer" in status
            assert "r restarts it" in status
            # The history before the death is still drawn.
            requests = screen.query_one("#graph-requests", TimePlot)
            assert plot_dots(requests) > 0
    finally:
        server.stop()


async def test_a_steady_graph_is_not_redrawn_when_only_time_moves_on() -> None:
    # A full window of a steady value, polled with a few ms of jitter: the picture stays the same,
    # so an idle server costs no plot redraw (the sample at the window's edge must not flicker).
    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), timeout=30)
        plot = app.screen.query_one("#graph-requests", TimePlot)
        await pilot.pause(0.1)
        redraws = []
        for tick in range(200, 230):
            # Each poll starts a little over a second after the one before, as the poller's do.
            times = [index * 1.004 + 0.003 * (index % 3) for index in range(tick)]
            series = {"requests_running": [3.0] * tick, "requests_waiting": [1.0] * tick}
            before = plot.redraws
            plot.show(times, series, 120.0, {"requests_running": 3.0, "requests_waiting": 1.0})
            redraws.append(plot.redraws - before)
        assert redraws[0] == 1 and sum(redraws[1:]) == 0, redraws
        # A value that moves is drawn at once.
        series["requests_running"][-1] = 9.0
        plot.show(times, series, 120.0, {"requests_running": 9.0, "requests_waiting": 1.0})
        assert plot.redraws == before + 1


async def test_live_polls_redraw_the_lines_once_the_axis_moved_a_dot_and_the_titles_every_poll() -> None:
    from rich.text import Text
    from textual.geometry import Region

    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), timeout=30)
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        snapshots = history(ticks=60)
        screen.draw(snapshots[40], series_of(snapshots[:41]), live=True)
        await pilot.pause(0.1)
        plot = screen.query_one("#graph-throughput", TimePlot)
        drawn, title = plot.redraws, plot.border_title
        # 2 minutes across a 28-cell plot less its y labels (about 22 columns of 2 dots): ~2.7 s a dot.
        assert 2.0 < plot.redraw_period(120.0) < 3.5
        # The next poll, a second later: the title shows its values at once, the lines wait.
        screen.draw(snapshots[41], series_of(snapshots[:42]), live=True)
        await pilot.pause(0.1)
        assert plot.redraws == drawn
        assert plot.border_title != title
        top_row = plot.render_lines(Region(0, 0, plot.outer_size.width, 1))[0].text
        assert Text.from_markup(plot.border_title or "").plain in top_row
        # Once the axis has moved by a dot, the lines are redrawn with the newest history.
        screen._graphs_drawn_at -= plot.redraw_period(120.0)
        screen.draw(snapshots[42], series_of(snapshots[:43]), live=True)
        assert plot.redraws == drawn + 1
        # Without ``live`` (one picture, as the exports and snapshots draw) the lines are drawn at once.
        screen.draw(snapshots[43], series_of(snapshots[:44]))
        assert plot.redraws == drawn + 2


@pytest.mark.parametrize(("size", "theme"), [((120, 40), "textual-dark"), ((80, 24), "nord")])
async def test_the_lines_drawn_on_cached_axes_are_the_picture_plotext_builds(
    size: tuple[int, int], theme: str
) -> None:
    """Each redraw puts braille dots on axes built once; a whole plotext build is the reference."""
    import random

    app = create_app(gpu="H100", hardware=fixed_hardware())
    async with app.run_test(size=size) as pilot:
        await pilot.press("6")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), timeout=30)
        app.theme = theme
        await pilot.pause(0.1)
        rng = random.Random(size[0])
        compared = 0
        for ticks in (1, 2, 60, 200):
            times = [index + rng.random() * 0.01 for index in range(ticks)]
            for plot in app.screen.query(TimePlot):
                series = {}
                for line in plot.spec.lines:
                    scale = rng.choice([1e-3, 1.0, 5000.0])
                    values = [
                        None if rng.random() < 0.1 else abs(rng.gauss(1, 0.5)) * scale for _ in range(ticks)
                    ]
                    if (
                        plot.spec.unit.top is not None
                    ):  # a fixed-top axis (%, fractions): some values above it
                        values = [None if value is None else min(value / scale, 1.2) for value in values]
                    series[line.series] = values
                plot.show(times, series, 120.0, {name: values[-1] for name, values in series.items()})
                drawn = [
                    [(segment.text, segment.style) for segment in strip] for strip in plot.drawn_strips()
                ]
                built = [
                    [(segment.text, segment.style) for segment in strip] for strip in plot.plotext_strips()
                ]
                assert drawn == built, (plot.spec.id, ticks)
                compared += 1
        assert compared >= 4 * len(GRAPHS)
