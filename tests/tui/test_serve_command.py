"""quant-tui serve: runs until signalled and leaves nothing, prints the diagnosis of a failed start, bad input in one line, re-plans from its options (Ray steps across boxes)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.plan.model_configs import write_config
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


# --- re-planning from serve's options on a given box (no server started) -----------------------


@pytest.fixture
def gpu_box(monkeypatch: pytest.MonkeyPatch) -> None:
    """This box seen as two H100-80GB (81,559 MiB each), as NVML would report them."""
    from tests.tui.test_tui_flow import fixed_hardware

    monkeypatch.setattr("engine.hardware.detect.detect_hardware", lambda: fixed_hardware(with_gpu=True))


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    from tui.cli import main

    assert main(list(argv)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "options",
    [
        ("--nodes", "2"),
        ("--nodes", "2", "--pipeline-parallel-size", "2"),
        ("--nodes", "2", "--distributed-executor-backend", "ray"),
    ],
    ids=" ".join,
)
def test_serve_across_boxes_is_recommends_plan(
    gpu_box: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], options: tuple[str, ...]
) -> None:
    model = str(write_config(tmp_path / "llama-3.1-70b", "llama-3.1-70b"))
    recommended = _json(capsys, "recommend", "--model", model, "--nodes", "2", "--json")
    as_is = next(c for c in recommended["candidates"] if not c["needs_quantization"])
    served = _json(capsys, "serve", "--model", model, "--dry-run", "--json", *options)
    for key in ("command", "vllm_args", "env", "prediction", "cluster_steps"):
        assert served[key] == as_is[key], key
    # 2 boxes of 2 GPUs: TP 2 in each, one pipeline stage per box, Ray. The plan is the last stage's
    # (the tightest): 40 of 80 layers × 1,711,308,800 B + lm_head 128,256 × 8,192 × 2 B + final norm
    # 8,192 × 2 B = 70,553,714,688 B over its 2 GPUs (the first stage, embedding instead: 35,276,849,152).
    assert (
        "--tensor-parallel-size 2 --pipeline-parallel-size 2 --distributed-executor-backend ray"
        in served["command"]
    )
    assert served["prediction"]["weights_bytes"] == 35_276_857_344
    assert [step["where"] for step in served["cluster_steps"]] == [
        "head node", "worker node 1", "head node", "head node"
    ]  # fmt: skip
    assert served["cluster_steps"][-1]["command"] == served["command"]


def test_serve_across_boxes_without_a_ray_cluster_prints_the_steps_and_refuses(
    gpu_box: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tui.cli import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # no `ray start` has left its address there
    model = str(write_config(tmp_path / "llama-3.1-70b", "llama-3.1-70b"))
    assert main(["serve", "--model", model, "--nodes", "2"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quant-tui: error: this plan spans 2 boxes joined by Ray")
    assert "the last one (vllm serve) on the head node" in lines[0]
    assert "[head node] VLLM_HOST_IP=<HEAD_NODE_IP> ray start --head --port=6379" in out
    assert "[worker node 1] VLLM_HOST_IP=<WORKER_1_IP> ray start --address=<HEAD_NODE_IP>:6379" in out
    assert "--pipeline-parallel-size 2 --distributed-executor-backend ray" in out.splitlines()[-1]


def test_serve_dry_run_text_shows_the_ray_steps(
    gpu_box: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tui.cli import main

    model = str(write_config(tmp_path / "llama-3.1-70b", "llama-3.1-70b"))
    assert main(["serve", "--model", model, "--nodes", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "2 boxes joined by Ray, as vLLM's multi-node guide starts them:"
    assert out[3] == "  [head node] ray status  # expect 2 nodes"
    assert out[4].startswith("  [head node] vllm serve ")


@pytest.mark.parametrize(
    ("hardware", "options", "words"),
    [
        ("gpu", ("--nodes", "2", "--distributed-executor-backend", "mp"), "runs on Ray"),
        ("gpu", ("--distributed-executor-backend", "threads"), "use mp or ray"),
        ("cpu", ("--nodes", "2"), "the CPU backend serves on one box"),
    ],
)
def test_serve_refuses_a_layout_it_cannot_run_in_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    hardware: str,
    options: tuple[str, ...],
    words: str,
) -> None:
    from tests.tui.test_tui_flow import fixed_hardware
    from tui.cli import main

    snapshot = fixed_hardware(with_gpu=hardware == "gpu")
    monkeypatch.setattr("engine.hardware.detect.detect_hardware", lambda: snapshot)
    model = str(write_config(tmp_path / "llama-3.1-70b", "llama-3.1-70b"))
    assert main(["serve", "--model", model, "--dry-run", *options]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and words in err


# --dtype on one H100 (81,559 MiB; defaults 8192 batched tokens, 1024 sequences) for Llama-3.1-8B, by
# hand: requested ceil(× 0.92) = 78,679,145,186 − weights (8,030,261,248 × 2 or 4 B) − activation peak
# (1024 × 128,256 × 14 B or 12 B + 8192 × 4096 × 5 B or 10 B) − 268,435,456 non-torch − 1 GiB of
# CUDA graphs.
SERVE_DTYPES = [
    ("auto", 16_060_522_496, 131_072, 59_269_995_234),  # peak 2,006,450,176
    ("bfloat16", 16_060_522_496, 131_072, 59_269_995_234),
    ("float16", 16_060_522_496, 131_072, 59_269_995_234),
    ("float32", 32_121_044_992, 262_144, 43_304_368_866),  # peak 1,911,554,048 (no float32 cast)
]


@pytest.mark.parametrize(("dtype", "weights", "kv_per_token", "kv_cache"), SERVE_DTYPES)
def test_serve_dtype_replans_weights_and_activations(
    gpu_box: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    dtype: str,
    weights: int,
    kv_per_token: int,
    kv_cache: int,
) -> None:
    model = str(write_config(tmp_path / "llama-3.1-8b", "llama-3.1-8b"))
    served = _json(capsys, "serve", "--model", model, "--dry-run", "--json", "--dtype", dtype)
    prediction = served["prediction"]
    assert (prediction["weights_bytes"], prediction["kv_bytes_per_token"]) == (weights, kv_per_token)
    assert prediction["kv_cache_bytes"] == kv_cache
    assert ("--dtype" in served["vllm_args"]) is (dtype != "auto")


# VLLM_PP_LAYER_PARTITION=20,12 on the two H100 (P 2, T 1) for Llama-3.1-8B bf16, by hand: one layer
# 436,224,000 B, embed_tokens = lm_head 1,050,673,152 B; stage 0: 20 layers + embed_tokens =
# 9,775,153,152 B (the tightest: more weights and more layers); stage 1: 12 layers + lm_head + norm
# 8,192 = 6,285,369,344 B. The server started is given the partition the plan used.
def test_serve_plans_and_passes_on_the_layer_partition(
    gpu_box: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = str(write_config(tmp_path / "llama-3.1-8b", "llama-3.1-8b"))
    monkeypatch.setenv("VLLM_PP_LAYER_PARTITION", "20,12")
    served = _json(capsys, "serve", "--model", model, "--dry-run", "--json", "--pipeline-parallel-size", "2")
    assert served["prediction"]["weights_bytes"] == 9_775_153_152
    assert served["env"]["VLLM_PP_LAYER_PARTITION"] == "20,12"
    assert "--pipeline-parallel-size 2" in served["command"]
