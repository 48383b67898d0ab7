"""The embedded demo model: a small Llama the project builds and trains itself, cached once per version."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from engine.errors import QuantTuiError
from engine.paths import cache_dir
from engine.process.child import ChildProcess

DEMO_MODEL_NAME = "quant-tui-demo"
# Bump whenever the corpus, tokenizer, architecture or training settings change: a new version is
# built into a new folder, so an old cache never passes for the current model.
DEMO_MODEL_VERSION = 2
COMPLETE_MARKER = ".quant-tui-complete"
_CANCELLED = "demo model build cancelled; run it again to build the demo model"

CorpusKind = Literal["train", "heldout", "calibration"]

_CORPUS_DIR = Path(__file__).resolve().parents[1] / "data" / "demo_corpus"
# The folder that holds the ``engine`` package, so the builder subprocess can import it from a checkout.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DemoBuildProgress:
    """One progress report from the demo model build.

    Attributes:
        stage: ``"start"``, ``"tokenizer"``, ``"train"``, ``"evaluate"``, ``"save"`` or ``"done"``.
        step: Steps finished in this stage.
        total: Steps this stage has.
        loss: The latest training loss, when the stage has one.
        message: A short human-readable description.
    """

    stage: str
    step: int
    total: int
    loss: float | None
    message: str


ProgressCallback = Callable[[DemoBuildProgress], None]


def demo_corpus_path(kind: CorpusKind) -> Path:
    """Returns the shipped corpus file: ``train`` (tokenizer and model), ``heldout`` (perplexity) or
    ``calibration`` (calibrated quantization)."""
    if kind not in ("train", "heldout", "calibration"):
        raise QuantTuiError(f"unknown demo corpus {kind!r}; use train, heldout or calibration")
    return _CORPUS_DIR / f"{kind}.txt"


def demo_model_dir(cache: Path | None = None) -> Path:
    """Returns where the demo model of this version lives (built or not) under ``cache`` or the cache folder."""
    return (cache if cache is not None else cache_dir()) / f"demo-model-v{DEMO_MODEL_VERSION}"


def is_demo_model_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a finished build (the marker is the last thing a build writes)."""
    return (folder / COMPLETE_MARKER).is_file()


def ensure_demo_model(
    cache: Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Returns the demo model folder, building it first (a few minutes on 2 cores) when it is not complete.

    Safe to call from several threads or processes at once: one builds while the others wait on a
    file lock and then reuse its result.

    Args:
        cache: The cache folder; quant-tui's cache folder when None.
        progress: Called with each progress report of a build (not called when nothing is built).
        cancel: Set it to stop a build; the call then raises and leaves nothing behind.

    Raises:
        QuantTuiError: The build failed or was cancelled.
    """
    target = demo_model_dir(cache)
    if is_demo_model_complete(target):
        return target
    with build_lock(target, cancel):
        if is_demo_model_complete(target):
            return target
        return build_demo_model(target, progress=progress, cancel=cancel)


def build_demo_model(
    target: Path,
    *,
    steps: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Builds the demo model into ``target`` (replacing what is there) in a subprocess, atomically.

    The files are written into a temporary folder next to ``target``, the completion marker is
    written last, and the folder is renamed onto ``target`` only then, so an interrupted build never
    leaves a folder that looks complete. Callers that may run concurrently should hold the lock
    that :func:`ensure_demo_model` takes.

    Args:
        target: The folder to create.
        steps: Training steps; None for the standard build. Fewer steps give a worse model (tests).
        progress: Called with each progress report.
        cancel: Set it to stop the build.

    Raises:
        QuantTuiError: The build failed or was cancelled.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(target)
    work = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    try:
        _run_builder(work, steps, progress, cancel)
        (work / COMPLETE_MARKER).write_text(
            json.dumps({"name": DEMO_MODEL_NAME, "version": DEMO_MODEL_VERSION}) + "\n", encoding="utf-8"
        )
        for path in work.iterdir():
            path.chmod(0o644)
        work.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if progress is not None:
        progress(DemoBuildProgress("done", 1, 1, None, f"demo model ready in {target}"))
    return target


def _run_builder(
    out: Path, steps: int | None, progress: ProgressCallback | None, cancel: threading.Event | None
) -> None:
    """Runs ``python -m engine.model.demo_training`` into ``out``, relaying its JSON progress lines."""
    command = [
        sys.executable,
        "-m",
        "engine.model.demo_training",
        "--corpus-dir",
        str(_CORPUS_DIR),
        "--out",
        str(out),
    ]
    if steps is not None:
        command += ["--steps", str(steps)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if progress is not None:
        progress(DemoBuildProgress("start", 0, 1, None, "building the demo model"))
    with (
        tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as stderr_file,
        ChildProcess(command, env=env, stderr=stderr_file, cancel=cancel) as builder,
    ):
        for line in builder.lines():
            report = parse_progress(line)
            if report is not None and progress is not None:
                progress(report)
        returncode = builder.wait()
        if builder.cancelled:
            raise QuantTuiError(_CANCELLED)
        if returncode != 0:
            cause = _last_line(stderr_file) or f"exit status {returncode}"
            raise QuantTuiError(f"building the demo model failed: {cause}")


def parse_progress(line: str) -> DemoBuildProgress | None:
    """Turns one builder stdout line into a progress report; None for anything else it printed."""
    try:
        data = json.loads(line)
        loss = data.get("loss")
        return DemoBuildProgress(
            stage=str(data["stage"]),
            step=int(data["step"]),
            total=int(data["total"]),
            loss=float(loss) if loss is not None else None,
            message=str(data.get("message", "")),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _last_line(stream: IO[str]) -> str:
    """The last non-empty line written to ``stream``, stripped."""
    stream.seek(0)
    last = ""
    for line in stream:
        if line.strip():
            last = line.strip()
    return last


def _remove_stale_builds(target: Path) -> None:
    """Removes temporary folders that earlier, interrupted builds of ``target`` left behind."""
    for leftover in target.parent.glob(f"{target.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def build_lock(target: Path, cancel: threading.Event | None) -> Iterator[None]:
    """Holds an exclusive lock on ``<target>.lock`` (released by the OS if this process dies).

    Raises:
        QuantTuiError: ``cancel`` was set while waiting for another build to finish.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    waiter = cancel if cancel is not None else threading.Event()
    with open(target.parent / f"{target.name}.lock", "a+b") as lock_file:
        while True:
            try:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # Another process or thread is building; poll so that a cancel is noticed.
                if waiter.wait(0.5):
                    raise QuantTuiError(_CANCELLED) from None
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
