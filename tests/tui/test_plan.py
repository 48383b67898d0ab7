"""Pilot tests: a plan across boxes (--nodes in the options dialog) shows its Ray steps, the Serve screen starts it only where a Ray cluster is reachable, and the app plans with VLLM_PP_LAYER_PARTITION from its environment."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import pytest

from engine.errors import QuantTuiError
from tests.tui.plan_steps import serve_as_is, set_plan_option
from tests.tui.test_tui_flow import SIZE, fixed_hardware, screen_text, wait_for
from tests.tui.test_tui_snapshots import write_tiny_llama
from tui.app import create_app
from tui.cli.app_command import build_app
from tui.screens.error_dialog import ErrorDialog
from tui.screens.plan import PlanScreen
from tui.screens.serve import serve_folder


@pytest.mark.parametrize("where", ["catalogued H100x8", "this box's two H100"])
async def test_nodes_shows_the_ray_steps_and_the_serve_screen_needs_a_cluster(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # no `ray start` has left its address there
    model = write_tiny_llama(tmp_path / "tiny-llama")
    detected = where.startswith("this box")
    app = create_app(
        model=str(model), gpu=None if detected else "H100x8", hardware=fixed_hardware(with_gpu=detected)
    )
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: app.selection.model is not None, timeout=60)
        await pilot.press("3")
        await wait_for(
            pilot, lambda: isinstance(app.screen, PlanScreen) and app.screen.recommendation is not None
        )
        plan = app.screen
        assert isinstance(plan, PlanScreen)
        await set_plan_option(pilot, "nodes", "2", until=lambda: plan.request.nodes == 2)
        shown = " ".join(screen_text(app, "#plan-text").split())
        assert "2 boxes joined by Ray, in this order:" in shown
        assert "[worker node 1] VLLM_HOST_IP=<WORKER_1_IP> ray start --address=<HEAD_NODE_IP>:6379" in shown
        assert "--pipeline-parallel-size 2 --distributed-executor-backend ray" in shown
        if not detected:
            return  # a catalogued GPU's plan is re-planned on this box when served
        _, serve = await serve_as_is(pilot, plan)
        folder = serve_folder(app.selection)
        assert folder is not None
        with pytest.raises(
            QuantTuiError, match=r"spans 2 boxes joined by Ray and .*the last one on the head node"
        ):
            serve.server_config(folder)


async def test_the_app_plans_with_the_layer_partition_vllm_reads_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 3-layer Llama in two stages on one H100x8 box: vLLM's own split would be 2 + 1 layers
    # (the leftover layer goes to the stage before the last), the environment asks for 1 + 2.
    monkeypatch.setenv("VLLM_PP_LAYER_PARTITION", "1,2")
    model = write_tiny_llama(tmp_path / "tiny-llama", num_hidden_layers=3)
    app = build_app(Namespace(model=str(model), gpu="H100x8"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: app.selection.model is not None, timeout=60)
        await pilot.press("3")
        # One stage (the default) with two counts is refused, as vLLM's get_pp_indices refuses it.
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorDialog), timeout=30)
        assert "VLLM_PP_LAYER_PARTITION='1,2' must give its one pipeline stage" in screen_text(app, "#cause")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), timeout=10)
        plan = app.screen
        assert isinstance(plan, PlanScreen)
        await set_plan_option(
            pilot, "pipeline_parallel_size", "2", until=lambda: plan.recommendation is not None
        )
        assert plan.request.layer_partition == (1, 2)
        shown = " ".join(screen_text(app, "#plan-text").split())
        assert "VLLM_PP_LAYER_PARTITION=1,2 vllm serve" in shown
        assert "--pipeline-parallel-size 2" in shown
