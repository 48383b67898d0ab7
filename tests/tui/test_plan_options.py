"""tui/cli/plan_options: `quant-tui serve --dry-run` starts what `quant-tui recommend --json` shows, option for option (no server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.tui.test_tui_snapshots import write_tiny_llama
from tui.cli import build_parser, main
from tui.cli.plan_options import PLAN_OPTIONS, PlanOption

OPTION_SETS: list[tuple[str, ...]] = [
    (),
    ("--max-model-len", "512", "--concurrency", "2000", "--max-num-seqs", "64"),
    ("--dtype", "float32", "--max-num-batched-tokens", "1024", "--concurrency", "3"),
    ("--gpu-memory-utilization", "0.8", "--cpu-kvcache-gib", "2", "--tensor-parallel-size", "1"),
]


def _cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(list(argv)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def _as_is(recommendation: dict[str, Any]) -> dict[str, Any]:
    """The candidate that serves the checkpoint as it is: what `serve --model` runs."""
    return next(c for c in recommendation["candidates"] if not c["needs_quantization"])


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("agree") / "tiny-llama")


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda options: " ".join(options) or "defaults")
@pytest.mark.parametrize("which", ["demo", "tiny-llama"])
def test_serve_dry_run_is_the_recommended_command(
    which: str, options: tuple[str, ...], request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(request.getfixturevalue("demo_model" if which == "demo" else "tiny_llama"))
    recommended = _as_is(_cli_json(capsys, "recommend", "--model", model, "--json", *options))
    served = _cli_json(capsys, "serve", "--model", model, "--dry-run", "--json", *options)
    assert served["vllm_args"] == recommended["vllm_args"]
    assert served["env"] == recommended["env"]
    assert served["command"] == recommended["command"]
    assert served["method"] == recommended["method"]
    assert served["prediction"] == recommended["prediction"]
    # Each option shows in the command it changes (the others size the KV cache through the env).
    for flag in ("--max-model-len", "--max-num-seqs", "--dtype", "--max-num-batched-tokens"):
        if flag in options:
            assert f"{flag} {options[options.index(flag) + 1]}" in served["command"]


def test_an_option_given_to_serve_changes_the_plan(
    tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dtype float32 re-plans: twice the weights and KV bytes, so the prediction changes, not only argv."""
    base = _cli_json(capsys, "serve", "--model", str(tiny_llama), "--dry-run", "--json")
    wide = _cli_json(capsys, "serve", "--model", str(tiny_llama), "--dry-run", "--json", "--dtype", "float32")
    assert wide["prediction"]["weights_bytes"] == 2 * base["prediction"]["weights_bytes"]
    assert wide["prediction"]["kv_bytes_per_token"] == 2 * base["prediction"]["kv_bytes_per_token"]


def test_serve_dry_run_prints_the_command_and_starts_nothing(
    tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--model", str(tiny_llama), "--dry-run", "--max-num-seqs", "8"]) == 0
    out, err = capsys.readouterr()
    command = out.strip()
    assert command.count("\n") == 0 and command.endswith("--max-num-seqs 8 --enforce-eager")
    assert "nothing started" in err


@pytest.mark.parametrize("command", ["serve", "recommend"])
@pytest.mark.parametrize("option", PLAN_OPTIONS, ids=lambda option: option.flag)
def test_serve_and_recommend_take_the_same_planning_options(command: str, option: PlanOption) -> None:
    args = build_parser().parse_args([command, "--model", "m", option.flag, "7"])
    assert getattr(args, option.field) == "7"


def test_dry_run_without_a_plan_shows_what_the_launcher_adds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder with no config.json: no plan, vLLM started as asked, with the launcher's CPU KV rule."""
    from engine.serve.backend import detect_backend

    assert main(["serve", "--model", str(tmp_path), "--dry-run", "--json", "--max-num-seqs", "4"]) == 0
    out, err = capsys.readouterr()
    served = json.loads(out)
    assert "no plan for" in err and served["prediction"] is None
    assert served["vllm_args"][-2:] == ["--max-num-seqs", "4"]
    if detect_backend() == "cpu":
        assert served["env"] == {"VLLM_CPU_KVCACHE_SPACE": "1"}  # the one rule's minimum
        assert served["command"].startswith("VLLM_CPU_KVCACHE_SPACE=1 ")


# What each command takes besides the planning options: recommend's target and output, serve's way to run.
RECOMMEND_ONLY = {"--model", "--gpu", "--goal", "--json", "--list-gpus"}
SERVE_ONLY = {
    "--model", "--port", "--host", "--api-key", "--api-key-file", "--served-model-name", "--quantization",
    "--distributed-executor-backend", "--ray", "--enforce-eager", "--timeout", "--log-file", "--verbose",
    "--json", "--dry-run", "--keep-running",
}  # fmt: skip


def _usage_flags(command: str) -> set[str]:
    """The options a subcommand's usage line names (each option by its first spelling)."""
    import argparse
    import re

    from tui.cli import recommend_command, serve_command

    subparsers = argparse.ArgumentParser().add_subparsers()
    recommend_command.register(subparsers)
    serve_command.register(subparsers)
    usage = subparsers.choices[command].format_usage()
    return set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", usage))


def test_recommend_serve_and_the_plan_screen_take_one_set_of_planning_options() -> None:
    """recommend, serve and the Plan screen's options dialog all read PLAN_OPTIONS, and nothing else plans."""
    from dataclasses import fields

    from engine.plan.plan_request import PlanRequest

    planning = {option.flag for option in PLAN_OPTIONS}
    assert _usage_flags("recommend") - RECOMMEND_ONLY == planning
    assert _usage_flags("serve") - SERVE_ONLY == planning
    assert {option.field for option in PLAN_OPTIONS} <= {field.name for field in fields(PlanRequest)}
    assert {"--nodes", "--gpu-memory-utilization", "--kv-cache-dtype", "--dtype"} <= planning


async def test_the_plan_screens_dialog_has_one_field_per_planning_option() -> None:
    from textual.app import App
    from textual.widgets import Input

    from engine.plan.plan_request import PlanRequest
    from tui.screens.plan_settings import PlanSettingsDialog

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(PlanSettingsDialog(PlanRequest()))

    app = Host()
    async with app.run_test() as pilot:
        await pilot.pause()
        shown = {widget.id for widget in app.screen.query(Input)}
    assert shown == {f"option-{option.field}" for option in PLAN_OPTIONS}
