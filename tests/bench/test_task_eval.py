"""Tests for engine.bench.task_eval and `bench --eval-task`: task lookup, lm-eval's argv and env, its result read, bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.bench.ab_result import BenchResult, VariantResult
from engine.bench.load_spec import LoadSpec
from engine.bench.task_eval import (
    LM_EVAL_REQUIREMENT,
    SHIPPED_TASKS_DIR,
    EvalError,
    EvalRequest,
    EvalTask,
    TaskAccuracy,
    lm_eval_argv,
    lm_eval_env,
    local_tokenizer,
    parse_lm_eval_results,
    require_lm_eval,
    resolve_task,
    shipped_tasks,
)
from tui.cli import main
from tui.cli.bench_report import format_table

DEMO_TASK = "quant_tui_demo_fluency"


def _lm_eval_knows(*names: str) -> Any:
    return lambda: set(names)


def test_the_shipped_task_is_found_by_name() -> None:
    assert shipped_tasks() == {DEMO_TASK: SHIPPED_TASKS_DIR / "demo_fluency.yaml"}
    assert resolve_task(DEMO_TASK, _lm_eval_knows()) == EvalTask(DEMO_TASK, SHIPPED_TASKS_DIR)


def test_the_shipped_task_data_is_twenty_four_way_questions() -> None:
    rows = [json.loads(line) for line in (SHIPPED_TASKS_DIR / "demo_fluency.jsonl").read_text().splitlines()]
    assert len(rows) == 20
    assert all(len(row["choices"]) == 4 and 0 <= row["label"] < 4 for row in rows)
    assert len({row["label"] for row in rows}) == 4  # the right answer is not always in one place


def test_lm_eval_itself_loads_the_shipped_task_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lm_eval", reason="the 'eval' extra is not installed")
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(SHIPPED_TASKS_DIR)  # quant-tui runs lm-eval from the task's folder
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    manager = TaskManager(include_path=str(SHIPPED_TASKS_DIR), include_defaults=False)
    task = manager.load([DEMO_TASK])["tasks"][DEMO_TASK]
    assert task.OUTPUT_TYPE == "multiple_choice" and len(task.eval_docs) == 20


@pytest.mark.parametrize(
    ("yaml_text", "typed", "expected_name"),
    [
        ("task: my_task\ndataset_path: json\n", "mine.yaml", "my_task"),
        ("task: with_function\nprocess_docs: !function utils.process\n", "f.yml", "with_function"),
    ],
)
def test_a_task_file_is_named_by_its_task_key(
    tmp_path: Path, yaml_text: str, typed: str, expected_name: str
) -> None:
    (tmp_path / typed).write_text(yaml_text)
    task = resolve_task(str(tmp_path / typed), _lm_eval_knows())
    assert task == EvalTask(expected_name, tmp_path)


def test_an_lm_eval_task_name_is_passed_through() -> None:
    assert resolve_task("gsm8k", _lm_eval_knows("gsm8k", "hellaswag")) == EvalTask("gsm8k")


@pytest.mark.parametrize(
    ("typed", "file_text", "message"),
    [
        ("no_such_task_xyz", None, "unknown lm-eval task 'no_such_task_xyz'"),
        ("missing.yaml", None, "no task file"),
        ("nameless.yaml", "dataset_path: json\n", "has no `task:` name"),
        ("broken.yaml", "task: [unclosed\n", "has no `task:` name"),
    ],
)
def test_bad_tasks_are_one_line(tmp_path: Path, typed: str, file_text: str | None, message: str) -> None:
    path = tmp_path / typed
    if file_text is not None:
        path.write_text(file_text)
    text = typed if file_text is None and not typed.endswith(".yaml") else str(path)
    with pytest.raises(EvalError, match=message) as caught:
        resolve_task(text, _lm_eval_knows("gsm8k"))
    assert "\n" not in str(caught.value)


def test_missing_lm_eval_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what an uninstalled package looks like to import
    with pytest.raises(EvalError) as caught:
        require_lm_eval()
    assert caught.value.fix == f"install it with: {sys.executable} -m pip install '{LM_EVAL_REQUIREMENT}'"


def _request(**changes: Any) -> EvalRequest:
    fields: dict[str, Any] = {
        "task": EvalTask(DEMO_TASK, SHIPPED_TASKS_DIR),
        "limit": 20,
        "base_url": "http://127.0.0.1:8000/v1",
        "model": "/models/demo",
        "tokenizer": Path("/models/demo"),
    }
    return EvalRequest(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "present", "absent"),
    [
        (
            {},
            [
                "--limit 20",
                f"--include_path {SHIPPED_TASKS_DIR}",
                f"--tasks {DEMO_TASK}",
                "base_url=http://127.0.0.1:8000/v1/completions,model=/models/demo,tokenizer=/models/demo,"
                "tokenizer_backend=huggingface,num_concurrent=2",
            ],
            ["/v1/v1"],
        ),
        ({"limit": None, "task": EvalTask("gsm8k")}, ["--tasks gsm8k"], ["--limit", "--include_path"]),
        (
            {"base_url": "http://h:9/", "num_concurrent": 4},
            ["base_url=http://h:9/v1/completions", "num_concurrent=4"],
            [],
        ),
        ({"api_key": "k-123"}, ["--model local-completions"], ["k-123"]),
    ],
)
def test_lm_eval_argv(changes: dict[str, Any], present: list[str], absent: list[str], tmp_path: Path) -> None:
    argv = lm_eval_argv(_request(**changes), tmp_path, python="python")
    line = " ".join(argv)
    assert argv[:4] == ["python", "-m", "lm_eval", "run"] and f"--output_path {tmp_path}" in line
    assert [part for part in present if part not in line] == []
    assert [part for part in absent if part in line] == []


@pytest.mark.parametrize(
    ("api_key", "environ", "expected_key"),
    [("k-123", {}, "k-123"), (None, {"OPENAI_API_KEY": "someone-elses"}, None), (None, {}, None)],
)
def test_lm_eval_env(api_key: str | None, environ: dict[str, str], expected_key: str | None) -> None:
    env = lm_eval_env(_request(api_key=api_key), {"PATH": "/bin", **environ})
    assert env.get("OPENAI_API_KEY") == expected_key
    assert env["HF_HUB_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == "1" and env["PATH"] == "/bin"


def _results(task: str, figures: dict[str, Any], effective: int = 20) -> dict[str, Any]:
    return {
        "results": {task: {"alias": task, "name": task, "sample_len": effective, **figures}},
        "n-samples": {task: {"original": 20, "effective": effective}},
        "lm_eval_version": "0.4.13",
    }


@pytest.mark.parametrize(
    ("figures", "metric", "value", "stderr"),
    [
        ({"acc,none": 0.75, "acc_stderr,none": 0.0993}, "acc,none", 0.75, 0.0993),
        (
            {
                "exact_match,strict-match": 0.5,
                "exact_match_stderr,strict-match": 0.1,
                "exact_match,flexible": 0.6,
            },
            "exact_match,strict-match",
            0.5,
            0.1,
        ),
        ({"acc,none": 1, "acc_stderr,none": "N/A"}, "acc,none", 1.0, None),
        ({"acc,none": 0.25, "acc_norm,none": 0.3, "acc_norm_stderr,none": 0.1}, "acc,none", 0.25, None),
    ],
)
def test_parse_lm_eval_results(
    figures: dict[str, Any], metric: str, value: float, stderr: float | None
) -> None:
    accuracy = parse_lm_eval_results(_results("t", figures), "t", 20)
    assert (accuracy.metric, accuracy.value, accuracy.stderr) == (metric, pytest.approx(value), stderr)
    assert accuracy.samples == 20 and accuracy.limit == 20 and accuracy.lm_eval_version == "0.4.13"
    assert json.loads(json.dumps(accuracy.to_json()))["metric"] == metric


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "no figures for task 't'"),
        (_results("other", {"acc,none": 1.0}), "no figures for task 't'"),
        (_results("t", {"acc_stderr,none": 0.1}), "no metric"),
    ],
)
def test_parse_lm_eval_results_rejects(data: dict[str, Any], message: str) -> None:
    with pytest.raises(EvalError, match=message):
        parse_lm_eval_results(data, "t", None)


def test_local_tokenizer(tmp_path: Path) -> None:
    assert local_tokenizer("any-name", tmp_path / "given") == tmp_path / "given"
    assert local_tokenizer(str(tmp_path), None) == tmp_path
    with pytest.raises(EvalError, match="give --model FOLDER"):
        local_tokenizer("org/remote-model", None)


def test_the_table_gets_one_task_column() -> None:
    accuracy = TaskAccuracy(DEMO_TASK, 20, 20, "acc,none", 0.75, 0.0993, {"acc,none": 0.75})
    result = BenchResult(
        variants=(
            VariantResult(method="bf16", model_dir=Path("/m"), task_accuracy=accuracy),
            VariantResult(method="fp8", model_dir=None, error="no kernel"),
        ),
        load=LoadSpec(),
        hardware="CPU only: test",
    )
    text = format_table(result)
    assert f"{DEMO_TASK} acc (20)" in text and "0.750 ± 0.099" in text
    assert result.rows()[0]["task_accuracy"] == 0.75 and result.rows()[1]["task_accuracy"] is None
    assert json.loads(json.dumps(result.to_dict()))["variants"][0]["task_accuracy"]["stderr"] == 0.0993


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--eval-task", "no_such_task.yaml"], "no task file"),
        (["--eval-task", DEMO_TASK, "--eval-limit", "0"], "--eval-limit must be at least 1"),
        (["--eval-limit", "5"], "--eval-limit needs --eval-task"),
    ],
)
def test_bench_eval_bad_input(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--url", "http://127.0.0.1:9", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("quant-tui: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_bench_eval_without_lm_eval_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    assert main(["bench", "--url", "http://127.0.0.1:9", "--eval-task", DEMO_TASK]) == 2
    err = capsys.readouterr().err
    assert "lm-eval is not installed" in err and "pip install" in err and len(err.strip().splitlines()) == 1
