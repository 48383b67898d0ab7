"""Bad input anywhere: one line, exit 2, nothing half-written — new options, a full disk, a model folder that changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import ModelError, QuantTuiError
from tests.quant_tui_command import QUANT_TUI, REPO
from tests.tui.test_tui_snapshots import write_tiny_llama

# Port 1 on loopback: nothing listens there, so a connection is refused at once.
UNREACHABLE = "http://127.0.0.1:1"


def _quant_tui(
    args: list[str], cwd: Path, timeout: float = 120, env_changes: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "QUANT_TUI_CACHE": str(cwd / "cache"),
        "PYTHONPATH": str(REPO),
        **(env_changes or {}),
    }
    env.pop("QUANT_TUI_API_KEY", None)
    if env_changes is None:
        env.pop("VLLM_PP_LAYER_PARTITION", None)
    return subprocess.run(
        [*QUANT_TUI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def _assert_one_line_error(run: subprocess.CompletedProcess[str], *words: str) -> None:
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stdout + run.stderr
    assert len(lines) == 1 and lines[0].startswith("quant-tui: error: "), run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working folder holding a tiny model, a file and a folder; nothing else may appear in it."""
    write_tiny_llama(tmp_path / "tiny")
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "a-folder").mkdir()
    return tmp_path


def _torch_sees_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


# (arguments, words the error line names); {dir} is the working folder.
SWEEP = [
    (["serve", "--model", "tiny", "--api-key-file", "{dir}/missing-key"], ["missing-key", "cannot read"]),
    (["serve", "--model", "tiny", "--api-key-file", "{dir}/a-folder"], ["a-folder", "Is a directory"]),
    (["bench", "--url", UNREACHABLE, "--num-prompts", "1"], ["cannot reach", "127.0.0.1:1"]),
    (["bench", "--url", "not-a-url", "--num-prompts", "1"], ["cannot reach"]),
    (["bench", "--url", UNREACHABLE, "--slo", "ttft=abc"], ["ttft=abc", "--slo ttft:500"]),
    (["bench", "--url", UNREACHABLE, "--slo", "speed:5"], ["speed"]),
    (
        ["bench", "--url", UNREACHABLE, "--save-result", "{dir}/a-file/result.json"],
        ["a-file", "--save-result"],
    ),
    (["bench", "--url", UNREACHABLE, "--save-result", "{dir}/a-folder"], ["is a folder", "result.json"]),
    (["recommend", "--model", "tiny", "--gpu", "H100x0"], ["out of range"]),
    (["recommend", "--model", "tiny", "--gpu", "NoSuchGPU"], ["unknown GPU", "--list-gpus"]),
    (["recommend", "--model", "tiny", "--gpu", "H100x100000"], ["out of range"]),
    (["monitor", UNREACHABLE, "--count", "1", "--export", "{dir}/new/history.csv"], ["cannot reach"]),
]
if not _torch_sees_cuda():  # where torch sees a GPU, --device cuda is a valid request
    SWEEP.append(
        (
            ["quantize", "--model", "tiny", "--method", "fp8", "--device", "cuda"],
            ["--device cuda", "no CUDA GPU"],
        )
    )


@pytest.mark.parametrize(
    ("args", "words"), SWEEP, ids=[" ".join(args[:1] + args[-2:-1]) for args, _ in SWEEP]
)
def test_new_options_refuse_bad_input_in_one_line_and_write_nothing(
    args: list[str], words: list[str], workdir: Path
) -> None:
    before = _files(workdir)
    run = _quant_tui([arg.replace("{dir}", str(workdir)) for arg in args], workdir)
    _assert_one_line_error(run, *words)
    assert [name for name in _files(workdir) if not name.startswith("cache")] == before


# Bad values of environment variables quant-tui reads: (variable, value, arguments, words the error names).
# The tiny Llama has 2 layers; vLLM's get_pp_indices takes one count per stage, summing to them.
ENV_SWEEP = [
    ("VLLM_PP_LAYER_PARTITION", "1;1", ["recommend", "--model", "tiny", "--gpu", "H100x2"], ["not a comma"]),
    ("VLLM_PP_LAYER_PARTITION", "1,x", ["serve", "--model", "tiny", "--dry-run"], ["'1,x'", "not a comma"]),
    (
        "VLLM_PP_LAYER_PARTITION",
        "1,2",
        ["recommend", "--model", "tiny", "--gpu", "H100x2", "--pipeline-parallel-size", "2"],
        ["2 in all", '"1,1"'],
    ),
    (
        "VLLM_PP_LAYER_PARTITION",
        "1,1",
        ["recommend", "--model", "tiny", "--gpu", "H100"],
        ["its one pipeline stage", "2 in all"],
    ),
    (
        "VLLM_PP_LAYER_PARTITION",
        "0,2",
        ["recommend", "--model", "tiny", "--gpu", "H100x2"],
        ["without layers"],
    ),
]


@pytest.mark.parametrize(("variable", "value", "args", "words"), ENV_SWEEP, ids=[row[1] for row in ENV_SWEEP])
def test_bad_environment_values_are_refused_in_one_line(
    variable: str, value: str, args: list[str], words: list[str], workdir: Path
) -> None:
    before = _files(workdir)
    run = _quant_tui(args, workdir, env_changes={variable: value})
    _assert_one_line_error(run, variable, *words)
    assert [name for name in _files(workdir) if not name.startswith("cache")] == before


def _fill(path: Path) -> None:
    """Writes zeros into ``path`` until the disk is full."""
    with path.open("wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass


@pytest.fixture
def full_disk() -> Iterator[Path]:
    """A 1 MiB tmpfs filled to the last byte (a full disk); needs root and mount(8)."""
    folder = Path("/tmp") / f"quant-tui-full-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        _fill(folder / "filler")
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
        folder.rmdir()


def test_a_result_on_a_full_disk_is_one_error_and_no_half_file(full_disk: Path) -> None:
    from engine.bench.result import ResultFileError, save_result

    with pytest.raises(ResultFileError, match="No space left on device") as raised:
        save_result({"completed": 4}, full_disk / "result.json")
    assert "\n" not in str(raised.value) and "--save-result" in str(raised.value)
    assert _files(full_disk) == ["filler"]


def test_appending_a_result_on_a_full_disk_keeps_the_old_lines_whole(full_disk: Path, tmp_path: Path) -> None:
    from engine.bench.result import ResultFileError, save_result

    # An earlier result on the disk before it filled: 4 KiB freed for it, then taken again.
    (full_disk / "filler").write_bytes(b"\0" * (1024 * 1024 - 8192))
    results = full_disk / "results.jsonl"
    save_result({"completed": 1}, results)
    _fill(full_disk / "filler-2")
    with pytest.raises(ResultFileError, match="No space left on device"):
        save_result({"completed": 2, "padding": "x" * 8192}, results, append=True)
    assert [json.loads(line) for line in results.read_text().splitlines()] == [{"completed": 1}]
    assert _files(full_disk) == ["filler", "filler-2", "results.jsonl"]


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_an_export_on_a_full_disk_is_one_error_and_no_half_file(kind: str, full_disk: Path) -> None:
    from engine.telemetry.poller import TelemetryPoller

    poller = TelemetryPoller(UNREACHABLE, interval_s=1.0)
    try:
        poller.poll_once()  # an error snapshot: still a row to write
        export = poller.export_csv if kind == "csv" else poller.export_json
        with pytest.raises(QuantTuiError, match="No space left on device") as raised:
            export(full_disk / f"history.{kind}")
    finally:
        poller.close()
    assert "\n" not in str(raised.value)
    assert _files(full_disk) == ["filler"]


def test_serve_refuses_a_server_log_on_a_full_disk(full_disk: Path, workdir: Path) -> None:
    """vLLM keeps serving when its log writes fail, so quant-tui would read nothing: refused before starting."""
    run = _quant_tui(["serve", "--model", "tiny", "--log-file", str(full_disk / "server.log")], workdir)
    _assert_one_line_error(run, "no space for the server log", "--log-file")
    assert _files(full_disk) == ["filler"]


def test_a_shard_replaced_while_quantizing_is_one_model_error_and_no_output(tmp_path: Path) -> None:
    """A download or copy renames a shorter shard over the one being read: a ModelError, no partial checkpoint."""
    from engine.quantize.request import QuantizeProgress, QuantizeRequest
    from engine.quantize.runner import quantize_model

    # Large enough (64 MiB) that quantizing outlasts the 0.1 s progress throttle on a fast, warm box.
    model = write_tiny_llama(tmp_path / "model", num_hidden_layers=8, hidden_size=512, intermediate_size=2048)
    shard = next(model.glob("*.safetensors"))
    replaced = []

    def replace_the_shard(progress: QuantizeProgress) -> None:
        if progress.stage == "quantizing" and not replaced:
            replaced.append(shard.stat().st_size)
            part = shard.with_name(".incoming")
            part.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
            os.replace(part, shard)  # as huggingface_hub and rsync do: rename over the old file

    with pytest.raises(ModelError) as raised:
        quantize_model(
            QuantizeRequest(model, "fp8", output=tmp_path / "out", workers=1), on_progress=replace_the_shard
        )
    assert replaced, "the run never reached the quantizing stage"
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{shard.name} is incomplete or damaged (")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


# Quantizes with two threads and truncates the shard in place (the same file, as a copy being redone
# with `cp` or `truncate` does) at the first 'quantizing' report, while items are being read.
TRUNCATE_MID_QUANTIZE_CHILD = """
import os, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
from engine.errors import QuantTuiError
from engine.quantize.request import QuantizeRequest
from engine.quantize.runner import quantize_model
model, output = Path(sys.argv[1]), Path(sys.argv[2])
shard = next(model.glob("*.safetensors"))
truncated = []

def truncate_in_place(progress):
    if progress.stage == "quantizing" and not truncated:
        truncated.append(shard.stat().st_size)
        os.truncate(shard, shard.stat().st_size // 3)

try:
    quantize_model(QuantizeRequest(model, sys.argv[3], output=output, workers=2), on_progress=truncate_in_place)
except QuantTuiError as error:
    print(type(error).__name__, error, sep=": ")
    sys.exit(2 if truncated else 3)
sys.exit(4)
"""


@pytest.mark.parametrize("method", ["w4a16", "nvfp4a16"])
def test_a_shard_truncated_in_place_while_quantizing_is_one_model_error_not_a_signal(
    method: str, tmp_path: Path
) -> None:
    """A shard cut short in place while it is read: a ModelError and no output (a memory map would get SIGBUS)."""
    model = write_tiny_llama(tmp_path / "model", num_hidden_layers=8, hidden_size=512, intermediate_size=2048)
    run = subprocess.run(
        [sys.executable, "-c", TRUNCATE_MID_QUANTIZE_CHILD, str(model), str(tmp_path / "out"), method],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2, (
        f"exit {run.returncode} (negative: killed by that signal)\n{run.stdout}{run.stderr}"
    )
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "ModelError: model.safetensors is incomplete or damaged ("
    ), run.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("shard cut in half (a copy in progress)", ["model.safetensors", "its header lists data up to byte"]),
        ("shard gone after it was listed", ["model.safetensors", "No such file"]),
        ("config.json empty (being written)", ["config.json", "not valid JSON"]),
        ("config.json replaced by a folder", ["no config.json"]),
    ],
)
def test_inspecting_a_model_folder_that_changes_is_one_model_error(
    change: str, words: list[str], tmp_path: Path
) -> None:
    from engine.model.inspect_model import inspect_model
    from engine.model.safetensors_headers import read_safetensors_headers, weight_files

    model = write_tiny_llama(tmp_path / "model")
    shard = model / "model.safetensors"
    with pytest.raises(QuantTuiError) as raised:
        if change.startswith("shard cut"):
            os.truncate(shard, shard.stat().st_size // 2)
            inspect_model(model)
        elif change.startswith("shard gone"):
            listed = weight_files(model)
            shard.unlink()
            read_safetensors_headers(listed)
        elif change.startswith("config.json empty"):
            (model / "config.json").write_text("")
            inspect_model(model)
        else:
            (model / "config.json").unlink()
            (model / "config.json").mkdir()
            inspect_model(model)
    assert isinstance(raised.value, ModelError) and "\n" not in str(raised.value)
    for word in words:
        assert word in str(raised.value)
