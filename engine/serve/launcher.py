"""Launches a local vLLM server (``VllmServer``): start-up, health wait, facts, and a stop that leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from engine.errors import QuantTuiError
from engine.plan.server_config import Backend, ServerConfig
from engine.process.child import stop_group
from engine.serve.backend import detect_backend
from engine.serve.client import auth_headers, server_url
from engine.serve.exit_guard import ExitGuard
from engine.serve.failure_diagnosis import Diagnosis, diagnose_failure
from engine.serve.log_follower import LogFollower, read_log_lines
from engine.serve.plan_check import PlanVsActual
from engine.serve.ports import port_is_free
from engine.serve.server_command import build_command, port_of
from engine.serve.startup_facts import StartupFacts, parse_startup_log

__all__ = ["PortInUseError", "ServerConfig", "ServerFailed", "VllmServer"]

_HEALTH_POLL_S = 0.5
# The least free space the server log's disk needs at start: vLLM's start-up log alone is ~100 KB.
LOG_SPACE_BYTES = 16 * 2**20


class ServerFailed(QuantTuiError):
    """The server exited, never answered /health in time, or start-up was cancelled.

    Attributes:
        diagnosis: the cause and the fix, read from the server's log.
        log_path: the full log.
    """

    def __init__(self, diagnosis: Diagnosis, log_path: Path | None = None) -> None:
        super().__init__(f"vLLM did not start: {diagnosis.cause}", diagnosis.fix)
        self.diagnosis = diagnosis
        self.log_path = log_path


class PortInUseError(QuantTuiError):
    """The port asked for is already taken on that address."""


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


class VllmServer:
    """One vLLM server process group this app owns (a context manager: enter starts and waits healthy).

    Unless ``keep_running``, the server is stopped on :meth:`stop`, on leaving the ``with`` block, at
    interpreter exit, on SIGTERM/SIGHUP, and by a detached watchdog if this process is killed.
    """

    def __init__(
        self,
        config: ServerConfig,
        log_path: Path | None = None,
        on_log: Callable[[str], None] | None = None,
        keep_running: bool = False,
    ) -> None:
        """Prepares the server; nothing runs until :meth:`start`.

        Args:
            config: what to serve.
            log_path: where the full log goes (default: a new file under quant-tui's cache folder).
            on_log: called with each log line, from a background thread.
            keep_running: leave the server running when this process exits (no watchdog).
        """
        self.config = config
        self.log_path = log_path
        self.keep_running = keep_running
        self.backend: Backend | None = None
        self.argv: list[str] = []
        self.facts: StartupFacts | None = None
        # The plan's prediction beside vLLM's start-up figures (None when started without a plan).
        self.comparison: PlanVsActual | None = None
        self.calibration_note: str | None = None
        self._on_log = on_log
        self._port: int | None = config.port
        self._process: subprocess.Popen[bytes] | None = None
        self._log: LogFollower | None = None
        # Re-entrant: a SIGTERM may arrive while this thread is already inside stop().
        self._stop_lock = threading.RLock()
        self._stopped = False
        self._guard = ExitGuard(lambda: self.stop(timeout=10))

    # --- what callers read ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port``; the port is known once :meth:`start` ran."""
        if self._port is None:
            raise QuantTuiError("the server has no port yet; call start() first")
        return server_url(self.config.connect_host, self._port)

    @property
    def port(self) -> int | None:
        """The port the server binds (``None`` before :meth:`start` when it was left to pick)."""
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's main process id (also its process group id)."""
        return self._process.pid if self._process is not None else None

    @property
    def log_tail(self) -> list[str]:
        """The last :data:`engine.serve.log_follower.LOG_TAIL_LINES` log lines (a copy)."""
        return self._log.tail if self._log is not None else []

    def is_running(self) -> bool:
        """Whether the server's main process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The main process's exit status once it exited."""
        return self._process.poll() if self._process is not None else None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Launches the server in its own process group and starts following its log.

        Raises:
            PortInUseError: the port given explicitly is taken.
            QuantTuiError: no usable vLLM, or the log file cannot be written.
        """
        if self._process is not None:
            raise QuantTuiError("this server was already started; create a new VllmServer")
        model = self.config.model
        if not (model.is_dir() or (model.suffix == ".gguf" and model.is_file())):
            raise QuantTuiError(
                f"model folder {model} does not exist; pass the folder holding config.json (or a .gguf file)"
            )
        if self.config.port is not None and not port_is_free(self.config.connect_host, self.config.port):
            raise PortInUseError(
                f"port {self.config.port} on {self.config.host} is already in use; "
                "pick another --port or leave it out to use a free one"
            )
        self.backend = detect_backend()
        argv, env_additions = build_command(self.config, self.backend)
        self.argv = argv
        self._port = port_of(argv)
        if self.log_path is None:
            self.log_path = _default_log_path(self._port)
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.log_path.parent).free
            if free < LOG_SPACE_BYTES:
                # vLLM keeps running when its log writes fail, so quant-tui would read no start-up facts.
                raise QuantTuiError(
                    f"no space for the server log in {self.log_path.parent} ({free // 1024} KiB free)",
                    "free some space, or pass --log-file on another disk",
                )
            log_file = open(self.log_path, "wb")  # noqa: SIM115 (handed to the child, closed below)
        except OSError as error:
            raise QuantTuiError(f"cannot write the server log {self.log_path} ({error.strerror})") from None
        try:
            # The server writes straight to the file (no pipe), so it never blocks on us and
            # survives us when asked to keep running.
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env_additions},
                start_new_session=True,
            )
        except OSError as error:
            raise QuantTuiError(f"cannot run {argv[0]} ({error.strerror}); is vLLM installed?") from None
        finally:
            log_file.close()
        process = self._process
        self._log = LogFollower(self.log_path, lambda: process.poll() is not None, self._on_log)
        self._log.start()
        if not self.keep_running:
            self._guard.arm(process.pid)

    def wait_healthy(self, timeout: float = 600, cancel: threading.Event | None = None) -> StartupFacts:
        """Waits until ``/health`` answers 200, then reads the start-up facts from the log.

        On failure the server is stopped (even with ``keep_running``).

        Raises:
            ServerFailed: the server exited, did not become healthy within ``timeout`` seconds, or
                ``cancel`` was set; it carries the diagnosis.
        """
        import httpx

        if self._process is None:
            raise QuantTuiError("the server was not started; call start() first")
        if self.facts is not None and self.is_running():
            return self.facts
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, headers=auth_headers(self.config.api_key)) as client:
            while True:
                returncode = self._process.poll()
                if returncode is not None:
                    self._fail(returncode)
                if cancel is not None and cancel.is_set():
                    self.stop()
                    raise ServerFailed(
                        Diagnosis("start-up was cancelled", "start the server again when you are ready"),
                        self.log_path,
                    )
                if time.monotonic() >= deadline:
                    self._fail(None, timeout=timeout)
                try:
                    if client.get(self.url + "/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if cancel is not None:
                    cancel.wait(_HEALTH_POLL_S)
                else:
                    time.sleep(_HEALTH_POLL_S)
        if self._log is not None:
            self._log.catch_up()
        self.facts = parse_startup_log(self.read_log())
        self._compare_with_plan(self.facts)
        return self.facts

    def _compare_with_plan(self, facts: StartupFacts) -> None:
        """Predicted vs. actual; on a GPU the difference calibrates later plans."""
        from engine.serve.plan_check import compare_startup, record_gpu_calibration

        backend = self.backend or "cpu"
        self.comparison = compare_startup(self.config, facts, backend)
        with contextlib.suppress(OSError):
            self.calibration_note = record_gpu_calibration(self.config, facts, backend)

    def stop(self, timeout: float = 20) -> None:
        """Stops the whole process group: SIGINT, then SIGTERM, then SIGKILL. Safe to call twice."""
        with self._stop_lock:
            if self._stopped or self._process is None:
                self._stopped = True
                self._guard.disarm()
                return
            self._stopped = True
            process = self._process
            pgid = process.pid
            tree = _descendants(pgid)
            # SIGINT is vLLM's clean shutdown; SIGTERM for what ignores it; SIGKILL for the rest.
            stop_group(process, timeout, ((signal.SIGINT, 0.6), (signal.SIGTERM, 0.4)))
            # Anything that moved to its own group is still ours to end.
            for child in tree:
                with contextlib.suppress(Exception):
                    child.kill()
            self._guard.disarm()
            if self._log is not None:
                self._log.stop(2)

    def __enter__(self) -> VllmServer:
        if self._process is None:
            self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.keep_running:
            self.stop()

    # --- log -----------------------------------------------------------------------------

    def read_log(self) -> list[str]:
        """The whole log so far (the file; the in-memory tail if the file cannot be read)."""
        lines = read_log_lines(self.log_path) if self.log_path is not None else None
        return lines if lines is not None else self.log_tail

    def _fail(self, returncode: int | None, timeout: float | None = None) -> None:
        if self._log is not None and returncode is not None:
            self._log.join(5)
        lines = self.read_log()
        diagnosis = diagnose_failure(lines, returncode)
        if diagnosis is None:
            if returncode is None:
                diagnosis = Diagnosis(
                    f"the server did not answer /health within {timeout:.0f} s",
                    f"see the log {self.log_path}; a large model may need a longer timeout",
                )
            else:
                diagnosis = Diagnosis(
                    f"the server exited with status {returncode}",
                    f"see the last lines of the log {self.log_path}",
                )
        self.stop()
        raise ServerFailed(diagnosis, self.log_path)


def _default_log_path(port: int) -> Path:
    from engine.paths import cache_dir

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return cache_dir() / "server-logs" / f"vllm-{stamp}-{port}.log"
