"""quant-tui serve: runs until signalled and leaves nothing, prints the diagnosis of a failed start, bad input in one line."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.process_tree import wait_gone
from tests.serve.real_server import REPO, STARTUP_TIMEOUT_S, pid_tree


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
        tree = pid_tree(cli.pid)
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
