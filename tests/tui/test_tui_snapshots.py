"""Snapshot tests of every screen at 80×24 and 120×40, on fixed hardware and a tiny model written here."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file
from textual.pilot import Pilot
from textual.widgets import Static

from tests.tui.test_tui_flow import fixed_hardware, wait_for
from tui.app import QuantTuiApp, create_app, create_monitor_app
from tui.screens.error_dialog import ErrorDialog
from tui.screens.help import HelpScreen
from tui.screens.quit_dialog import QuitDialog

SIZES = [(80, 24), (120, 40)]
TINY_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "torch_dtype": "float16",
    "tie_word_embeddings": False,
}


def write_tiny_llama(folder: Path, **overrides: Any) -> Path:
    """Writes a random Llama (float16 safetensors and config.json; two layers unless overridden) into ``folder``."""
    config = {**TINY_CONFIG, **overrides}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    hidden, mlp, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = hidden // config["num_attention_heads"] * config["num_key_value_heads"]
    shapes = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (vocab, hidden),
    }
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}"
        shapes |= {
            f"{prefix}.self_attn.q_proj.weight": (hidden, hidden),
            f"{prefix}.self_attn.k_proj.weight": (kv, hidden),
            f"{prefix}.self_attn.v_proj.weight": (kv, hidden),
            f"{prefix}.self_attn.o_proj.weight": (hidden, hidden),
            f"{prefix}.mlp.gate_proj.weight": (mlp, hidden),
            f"{prefix}.mlp.up_proj.weight": (mlp, hidden),
            f"{prefix}.mlp.down_proj.weight": (hidden, mlp),
            f"{prefix}.input_layernorm.weight": (hidden,),
            f"{prefix}.post_attention_layernorm.weight": (hidden,),
        }
    generator = np.random.default_rng(0)
    tensors = {
        name: (generator.standard_normal(shape) * 0.02).astype(np.float16) for name, shape in shapes.items()
    }
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


@pytest.fixture
def tiny_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A tiny model in the current folder (so screens show the same ``./tiny-llama`` path everywhere)."""
    monkeypatch.chdir(tmp_path)
    write_tiny_llama(tmp_path / "tiny-llama")
    (tmp_path / "empty-hub").mkdir()
    return "./tiny-llama"


def guided_app(tiny_model: str, tmp_path: Path) -> QuantTuiApp:
    """The guided app on fixed hardware, planning for two H100s, with an empty Hugging Face cache."""
    return create_app(
        model=tiny_model, gpu="H100x2", hardware=fixed_hardware(), hf_cache=tmp_path / "empty-hub"
    )


def walk(
    *keys: str, until: Callable[[QuantTuiApp], bool] | None = None
) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """A ``run_before`` that presses ``keys`` one by one, then waits for ``until``."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, QuantTuiApp)
        await wait_for(pilot, lambda: app.selection.target is not None, timeout=30)
        for key in keys:
            await pilot.press(key)
            await pilot.pause()
            if key == "2":
                await wait_for(pilot, lambda: app.selection.model is not None, timeout=30)
        if until is not None:
            await wait_for(pilot, lambda: until(app), timeout=30)
        await pilot.pause(0.2)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_hardware_screen_without_gpu(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    app = create_app(gpu="H100x2", hardware=fixed_hardware())
    assert snap_compare(app, terminal_size=size, run_before=walk())


@pytest.mark.parametrize("size", SIZES)
def test_hardware_screen_with_two_gpus(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    app = create_app(hardware=fixed_hardware(with_gpu=True))
    assert snap_compare(app, terminal_size=size, run_before=walk())


@pytest.mark.parametrize("size", SIZES)
def test_model_screen(
    snap_compare: Callable[..., bool], size: tuple[int, int], tiny_model: str, tmp_path: Path
) -> None:
    assert snap_compare(guided_app(tiny_model, tmp_path), terminal_size=size, run_before=walk("2"))


@pytest.mark.parametrize("size", SIZES)
def test_plan_screen(
    snap_compare: Callable[..., bool], size: tuple[int, int], tiny_model: str, tmp_path: Path
) -> None:
    assert snap_compare(guided_app(tiny_model, tmp_path), terminal_size=size, run_before=walk("2", "3"))


@pytest.mark.parametrize("size", SIZES)
def test_plan_screen_after_turning_knobs(
    snap_compare: Callable[..., bool], size: tuple[int, int], tiny_model: str, tmp_path: Path
) -> None:
    keys = ("2", "3", "left_square_bracket", "plus", "plus", "g", "k", "down")
    assert snap_compare(guided_app(tiny_model, tmp_path), terminal_size=size, run_before=walk(*keys))


@pytest.mark.parametrize("size", SIZES)
def test_quantize_screen_before_start(
    snap_compare: Callable[..., bool], size: tuple[int, int], tiny_model: str, tmp_path: Path
) -> None:
    from engine.quantize.estimate import CostEstimate
    from tui.screens.quantize import QuantizeScreen, cost_text

    def estimated(app: QuantTuiApp) -> bool:
        return isinstance(app.screen, QuantizeScreen) and app.screen.cost is not None

    walked = walk("2", "3", "n", until=estimated)

    async def run_before(pilot: Pilot[Any]) -> None:
        await walked(pilot)
        # The real estimate counts this machine's free RAM and disk; the picture shows fixed ones.
        fixed = CostEstimate("fp8", 300 * 2**20, 600 * 2**10, 0.5, 16 * 2**30, 60 * 2**30, "one line", None)
        pilot.app.screen.query_one("#quantize-cost", Static).update(cost_text(fixed))
        await pilot.pause(0.1)

    assert snap_compare(guided_app(tiny_model, tmp_path), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_serve_screen_before_start(
    snap_compare: Callable[..., bool], size: tuple[int, int], tiny_model: str, tmp_path: Path
) -> None:
    assert snap_compare(guided_app(tiny_model, tmp_path), terminal_size=size, run_before=walk("2", "5"))


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_without_a_server(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    app = create_app(gpu="H100", hardware=fixed_hardware())
    assert snap_compare(app, terminal_size=size, run_before=walk("6"))


@pytest.mark.parametrize("size", SIZES)
def test_monitor_dashboard_when_the_server_is_unreachable(
    snap_compare: Callable[..., bool], size: tuple[int, int]
) -> None:
    # One poll only (a long interval): each further tick would add a point to the sparklines.
    app = create_monitor_app("http://127.0.0.1:9", interval=60.0, sample_hardware=False)

    async def run_before(pilot: Pilot[Any]) -> None:
        screen = pilot.app.screen
        await wait_for(
            pilot, lambda: getattr(screen, "poll_status", "").startswith("POLL FAILED"), timeout=30
        )
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    app = create_app(gpu="H100", hardware=fixed_hardware())
    assert snap_compare(
        app,
        terminal_size=size,
        run_before=walk("question_mark", until=lambda app: isinstance(app.screen, HelpScreen)),
    )


@pytest.mark.parametrize("size", SIZES)
def test_error_dialog(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    app = create_app(gpu="H999", hardware=fixed_hardware())

    async def run_before(pilot: Pilot[Any]) -> None:
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ErrorDialog), timeout=30)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_quit_dialog(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    app = create_app(gpu="H100", hardware=fixed_hardware())

    async def run_before(pilot: Pilot[Any]) -> None:
        await wait_for(pilot, lambda: app.selection.target is not None, timeout=30)
        app.push_screen(QuitDialog(["the vLLM server (pid 4242)", "a quantization"]))
        await wait_for(pilot, lambda: isinstance(app.screen, QuitDialog))
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def drawn_dashboard(snapshots: list[Any]) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """A ``run_before`` that opens the dashboard (no server) and draws a fixed telemetry history."""
    from engine.telemetry.history import series_of
    from tui.screens.dashboard import DashboardScreen

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        await pilot.press("6")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), timeout=30)
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        await pilot.pause(0.1)
        screen.draw(snapshots[-1], series_of(snapshots))
        await pilot.pause(0.3)

    return run_before


@pytest.mark.parametrize("gpus", [2, 8])
@pytest.mark.parametrize("size", SIZES)
def test_dashboard_with_gpus(snap_compare: Callable[..., bool], size: tuple[int, int], gpus: int) -> None:
    from tests.tui.telemetry_data import history

    app = create_app(gpu="H100", hardware=fixed_hardware())
    assert snap_compare(app, terminal_size=size, run_before=drawn_dashboard(history(gpu_count=gpus)))


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_on_the_cpu_backend(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    from tests.tui.telemetry_data import history

    app = create_app(gpu="H100", hardware=fixed_hardware())
    assert snap_compare(app, terminal_size=size, run_before=drawn_dashboard(history(gpu_count=0)))


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_when_the_engine_died(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    from tests.tui.telemetry_data import history

    app = create_app(gpu="H100", hardware=fixed_hardware())
    snapshots = history(gpu_count=2, dead_from=80)
    assert snap_compare(app, terminal_size=size, run_before=drawn_dashboard(snapshots))
