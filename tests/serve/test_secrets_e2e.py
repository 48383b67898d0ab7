"""An API key given to quant-tui never shows: not in `ps`, logs, exports, bench results or error messages."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import psutil
import pytest

from tests.quant_tui_command import QUANT_TUI, REPO, Output, interrupt, start_quant_tui, wait_serving


def _run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QUANT_TUI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _every_command_line() -> str:
    lines = []
    for process in psutil.process_iter(["cmdline"]):
        lines.append(" ".join(process.info["cmdline"] or []))
    return "\n".join(lines)


@pytest.mark.e2e
def test_api_key_never_leaks(demo_model: Path, tmp_path: Path) -> None:
    key = "qt-" + secrets.token_hex(16)
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("VLLM_API_KEY", "QUANT_TUI_API_KEY")}
    log_file = tmp_path / "server.log"
    serve = start_quant_tui(
        [
            "serve",
            "--model",
            str(demo_model),
            "--max-model-len",
            "512",
            "--enforce-eager",
            "--api-key-file",
            str(key_file),
            "--log-file",
            str(log_file),
        ],
        env,
    )
    output = Output(serve)
    try:
        url = wait_serving(output)
        assert key not in _every_command_line()  # `ps` shows argv to every user of the box

        result_file = tmp_path / "bench.json"
        load = ["--num-prompts", "4", "--concurrency", "2", "--input-len", "16", "--output-len", "8"]
        bench = _run(
            [
                "bench",
                "--url",
                url,
                "--api-key-file",
                str(key_file),
                *load,
                "--save-result",
                str(result_file),
            ],
            env,
        )
        assert bench.returncode == 0, bench.stdout + bench.stderr
        assert json.loads(result_file.read_text())["completed"] == 4

        export = tmp_path / "history.json"
        monitor = _run(
            [
                "monitor",
                url,
                "--api-key-file",
                str(key_file),
                "--count",
                "2",
                "--json",
                "--export",
                str(export),
            ],
            env,
        )
        assert monitor.returncode == 0, monitor.stdout + monitor.stderr

        # The wrong key: refused with a one-line error that names neither key.
        wrong_file = tmp_path / "wrong-key"
        wrong_file.write_text(key[::-1] + "\n")
        refused = _run(["bench", "--url", url, "--api-key-file", str(wrong_file), "--num-prompts", "1"], env)
        assert refused.returncode != 0
        assert key[::-1] not in refused.stdout + refused.stderr
        # Without any key: refused, with what to do (vLLM guards /v1, not /metrics).
        anonymous = _run(["bench", "--url", url, "--num-prompts", "1"], env)
        assert anonymous.returncode != 0
        assert "api-key" in anonymous.stdout + anonymous.stderr
    finally:
        interrupt(serve)

    texts = {"serve output": output.wait_closed()}
    for run in (bench, monitor, refused, anonymous):
        texts[" ".join(run.args[3:5])] = run.stdout + run.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != key_file:
            texts[str(path)] = path.read_text(errors="replace")
    assert log_file.stat().st_size > 0 and export.stat().st_size > 0
    assert [where for where, text in texts.items() if key in text] == []
