"""Task accuracy through lm-eval: its ``local-completions`` model run against a served endpoint, its result read."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import QuantTuiError
from engine.serve import client as server_client

__all__ = [
    "LM_EVAL_REQUIREMENT",
    "SHIPPED_TASKS_DIR",
    "EvalError",
    "EvalRequest",
    "EvalTask",
    "TaskAccuracy",
    "install_command",
    "lm_eval_argv",
    "lm_eval_env",
    "local_tokenizer",
    "parse_lm_eval_results",
    "require_lm_eval",
    "resolve_task",
    "run_task_eval",
    "shipped_tasks",
]

# The release quant-tui's task files and result parsing are checked against ([api]: aiohttp, tenacity, requests).
LM_EVAL_REQUIREMENT = "lm-eval[api]==0.4.13"
SHIPPED_TASKS_DIR = Path(__file__).resolve().parents[1] / "data" / "eval_tasks"
_OUTPUT_TAIL_LINES = 40


class EvalError(QuantTuiError):
    """The task-accuracy check cannot run as asked, or lm-eval failed."""


@dataclass(frozen=True)
class EvalTask:
    """An lm-eval task quant-tui can name to lm-eval.

    Attributes:
        name: The task name lm-eval knows it by.
        include_path: The folder holding its YAML (lm-eval's ``--include_path``; lm-eval runs from
            there, so a ``data_files`` path in the YAML is relative to it); ``None`` for lm-eval's own tasks.
    """

    name: str
    include_path: Path | None = None


@dataclass(frozen=True)
class EvalRequest:
    """One lm-eval run against one served model.

    Attributes:
        task: What to evaluate.
        limit: Documents to evaluate (lm-eval ``--limit``); ``None``: all of them.
        base_url: The server (``http://host:port``, ``/v1`` or not).
        model: The served model name.
        tokenizer: The local model folder whose tokenizer lm-eval uses (nothing is downloaded).
        api_key: Handed to lm-eval as ``OPENAI_API_KEY``, never on its command line.
        num_concurrent: Requests lm-eval keeps in flight.
        timeout_s: lm-eval's per-request timeout.
    """

    task: EvalTask
    limit: int | None
    base_url: str
    model: str
    tokenizer: Path
    api_key: str | None = None
    num_concurrent: int = 2
    timeout_s: int = 120


@dataclass(frozen=True)
class TaskAccuracy:
    """What lm-eval measured on one task.

    Attributes:
        task: The task's name.
        limit: The ``--limit`` asked for (``None``: all documents).
        samples: Documents actually evaluated.
        metric: The task's first metric (``acc`` for multiple choice), with its filter (``acc,none``).
        value: Its value.
        stderr: Its standard error, when lm-eval gives one.
        metrics: Every figure lm-eval reported for the task.
        lm_eval_version: The lm-eval release that measured it.
    """

    task: str
    limit: int | None
    samples: int | None
    metric: str
    value: float
    stderr: float | None
    metrics: Mapping[str, float]
    lm_eval_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, every field."""
        data = asdict(self)
        data["metrics"] = dict(self.metrics)
        return data

    def text(self) -> str:
        """``0.750 ± 0.099 acc`` (no stderr: the value alone)."""
        return f"{self.cell()} {self.metric_name()}"

    def metric_name(self) -> str:
        """The metric without its filter: ``acc`` for ``acc,none``."""
        return self.metric.split(",")[0]

    def header(self) -> str:
        """A result table's column header: ``quant_tui_demo_fluency acc (20)``."""
        return f"{self.task} {self.metric_name()} ({self.samples})"

    def cell(self) -> str:
        """A result table's cell: ``0.750 ± 0.099`` (no stderr: the value alone)."""
        return f"{self.value:.3f}" + ("" if self.stderr is None else f" ± {self.stderr:.3f}")


def install_command() -> str:
    """The command that installs lm-eval into the Python quant-tui runs on."""
    return f"{sys.executable} -m pip install '{LM_EVAL_REQUIREMENT}'"


def require_lm_eval(module: str = "lm_eval") -> None:
    """Raises :class:`EvalError` (with the install command) when lm-eval cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise EvalError(
            "lm-eval is not installed (bench --eval-task runs it)",
            f"install it with: {install_command()}",
        )


def _task_name(yaml_path: Path) -> str | None:
    """The ``task:`` of an lm-eval YAML (its ``!function`` tags are left unread)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        data = yaml.load(yaml_path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    name = data.get("task") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def shipped_tasks() -> dict[str, Path]:
    """The tasks quant-tui ships (``engine/data/eval_tasks``): name -> YAML file."""
    found = {}
    for path in sorted(SHIPPED_TASKS_DIR.glob("*.yaml")):
        name = _task_name(path)
        if name is not None:
            found[name] = path
    return found


def _lm_eval_task_names() -> Collection[str]:
    """Every task lm-eval itself knows (indexing them takes several seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager().all_tasks


def resolve_task(text: str, known_tasks: Callable[[], Collection[str]] = _lm_eval_task_names) -> EvalTask:
    """The task ``--eval-task`` names: a task YAML file, a task quant-tui ships, or one of lm-eval's own.

    Args:
        text: What the user typed.
        known_tasks: lm-eval's own task names, asked only when ``text`` is neither a file nor shipped.

    Raises:
        EvalError: No such file or task; the message lists the shipped tasks.
    """
    shipped = shipped_tasks()
    choices = (
        f"a task YAML file, a task quant-tui ships ({', '.join(shipped)}) or one `lm-eval ls tasks` lists"
    )
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise EvalError(f"no task file {text}", f"give {choices}")
        name = _task_name(path)
        if name is None:
            raise EvalError(f"{text} has no `task:` name", "give an lm-eval task YAML (`task: NAME`, ...)")
        return EvalTask(name, path.resolve().parent)
    if text in shipped:
        return EvalTask(text, SHIPPED_TASKS_DIR)
    require_lm_eval()
    if text not in known_tasks():
        raise EvalError(f"unknown lm-eval task {text!r}", f"give {choices}")
    return EvalTask(text)


def local_tokenizer(served_model: str, model_dir: Path | None) -> Path:
    """The folder whose tokenizer lm-eval loads: the one given, else the served model when it is a folder here.

    Raises:
        EvalError: Neither is a local folder (lm-eval would try to download the tokenizer).
    """
    if model_dir is not None:
        return model_dir
    if Path(served_model).is_dir():
        return Path(served_model)
    raise EvalError(
        f"the served model {served_model!r} is not a folder here, and lm-eval needs its tokenizer",
        "give --model FOLDER (a local copy of the served model)",
    )


def lm_eval_argv(request: EvalRequest, output_dir: Path, python: str = sys.executable) -> list[str]:
    """lm-eval's command line: its ``local-completions`` model against the server, offline tokenizer."""
    root = server_client.base_url(request.base_url)
    model_args = [
        f"base_url={root}/v1/completions",
        f"model={request.model}",
        f"tokenizer={request.tokenizer}",
        "tokenizer_backend=huggingface",
        f"num_concurrent={request.num_concurrent}",
        "max_retries=1",
        f"timeout={request.timeout_s}",
    ]
    argv = [
        python,
        "-m",
        "lm_eval",
        "run",
        "--model",
        "local-completions",
        "--model_args",
        ",".join(model_args),
    ]
    argv += ["--tasks", request.task.name, "--output_path", str(output_dir), "--seed", "0"]
    if request.task.include_path is not None:
        argv += ["--include_path", str(request.task.include_path)]
    if request.limit is not None:
        argv += ["--limit", str(request.limit)]
    return argv


def lm_eval_env(request: EvalRequest, environ: Mapping[str, str]) -> dict[str, str]:
    """lm-eval's environment: offline (no hub, no dataset download), the API key where lm-eval reads it."""
    env = {key: value for key, value in environ.items() if key != "OPENAI_API_KEY"}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if request.api_key:
        env["OPENAI_API_KEY"] = request.api_key
    return env


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parse_lm_eval_results(data: Mapping[str, Any], task: str, limit: int | None) -> TaskAccuracy:
    """The task's figures from lm-eval's ``results_*.json``.

    Raises:
        EvalError: The file has no figure for ``task``.
    """
    results = data.get("results")
    figures = results.get(task) if isinstance(results, Mapping) else None
    if not isinstance(figures, Mapping):
        raise EvalError(f"lm-eval's result has no figures for task {task!r}", "see lm-eval's output above")
    metrics = {
        key: number for key, value in figures.items() if "," in key and (number := _number(value)) is not None
    }
    primary = [key for key in metrics if "_stderr," not in key]
    if not primary:
        raise EvalError(f"lm-eval reported no metric for task {task!r}", "check the task's metric_list")
    metric = primary[0]
    name, _, filter_name = metric.partition(",")
    counts = data.get("n-samples", {}).get(task, {}) if isinstance(data.get("n-samples"), Mapping) else {}
    samples = counts.get("effective") if isinstance(counts, Mapping) else None
    version = data.get("lm_eval_version")
    return TaskAccuracy(
        task=task,
        limit=limit,
        samples=samples if isinstance(samples, int) else None,
        metric=metric,
        value=metrics[metric],
        stderr=metrics.get(f"{name}_stderr,{filter_name}"),
        metrics=metrics,
        lm_eval_version=version if isinstance(version, str) else None,
    )


def _failure_line(tail: deque[str]) -> str:
    """The line of lm-eval's output that says what went wrong (its last error, else its last line)."""
    lines = [" ".join(line.split()) for line in tail if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:300]


def run_task_eval(
    request: EvalRequest,
    on_line: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> TaskAccuracy:
    """Runs lm-eval in a child process against the server and reads its result file.

    Args:
        request: What to evaluate, where.
        on_line: Called with each line lm-eval prints.
        cancel: Set it to stop lm-eval (its whole process group).

    Raises:
        EvalError: lm-eval is missing, failed (its error line, API key redacted) or was cancelled.
    """
    from engine.process.child import ChildProcess

    require_lm_eval()
    tail: deque[str] = deque(maxlen=_OUTPUT_TAIL_LINES)
    with tempfile.TemporaryDirectory(prefix="quant-tui-lm-eval-") as folder:
        output_dir = Path(folder)
        argv = lm_eval_argv(request, output_dir)
        env = lm_eval_env(request, os.environ)
        with ChildProcess(argv, env=env, cwd=request.task.include_path, cancel=cancel) as child:
            for line in child.lines():
                line = server_client.redact(line.rstrip("\n"), [request.api_key])
                tail.append(line)
                if on_line is not None:
                    on_line(line)
            code = child.wait()
        if child.cancelled:
            raise EvalError("task evaluation cancelled")
        if code != 0:
            raise EvalError(
                f"lm-eval failed on task {request.task.name} (exit {code}): {_failure_line(tail)}",
                "see lm-eval's output above",
            )
        files = sorted(output_dir.rglob("results_*.json"), key=lambda path: path.stat().st_mtime)
        if not files:
            raise EvalError("lm-eval wrote no result file", "see lm-eval's output above")
        try:
            data = json.loads(files[-1].read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise EvalError(f"lm-eval's result file is unreadable: {error}") from error
    return parse_lm_eval_results(data, request.task.name, request.limit)
