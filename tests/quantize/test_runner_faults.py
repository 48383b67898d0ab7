"""Faults: bad inputs are refused in one line before any write; interrupted or failing runs leave nothing behind."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import namedtuple
from pathlib import Path

import pytest

from engine.errors import QuantTuiError
from engine.quantize.request import QuantizeProgress, QuantizeRequest
from engine.quantize.runner import QuantizeCancelled, preflight, quantize_model
from tests.quantize.quantize_support import build_tiny_llama

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny Llama built per module; tests copy it before damaging it."""
    return build_tiny_llama(tmp_path_factory.mktemp("pristine") / "tiny-llama")


@pytest.fixture
def source(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny Llama in an otherwise empty folder."""
    return Path(shutil.copytree(pristine, tmp_path / "tiny-llama"))


def siblings(folder: Path) -> set[str]:
    """Names next to the source folder, hidden ones included."""
    return {path.name for path in folder.parent.iterdir()}


def refuse(request: QuantizeRequest, match: str) -> str:
    """Asserts both preflight and quantize_model refuse with a one-line message and write nothing."""
    before = siblings(request.source)
    with pytest.raises(QuantTuiError, match=match) as caught:
        preflight(request)
    with pytest.raises(QuantTuiError, match=match):
        quantize_model(request)
    message = str(caught.value)
    assert "\n" not in message
    assert siblings(request.source) == before
    return message


def truncate_shard(folder: Path) -> None:
    path = folder / "model.safetensors"
    os.truncate(path, path.stat().st_size - 1000)


def garble_header(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"{not json at all" + b"!" * 16
    path.write_bytes(bytes(data))


def drop_config(folder: Path) -> None:
    (folder / "config.json").unlink()


def break_config(folder: Path) -> None:
    (folder / "config.json").write_text("{ nope")


def drop_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def make_gpt2(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (folder / "config.json").write_text(json.dumps(config))


def claim_quantized(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    (folder / "config.json").write_text(json.dumps(config))


def index_missing_shard(folder: Path) -> None:
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}})
    )


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (truncate_shard, r"model.safetensors is incomplete or damaged \("),
        (garble_header, r"model.safetensors is incomplete or damaged \("),
        (drop_config, "no config.json"),
        (break_config, "not valid JSON"),
        (drop_weights, r"no \*\.safetensors weights"),
        (make_gpt2, "GPT2LMHeadModel .* is not supported"),
        (claim_quantized, "already quantized"),
        (index_missing_shard, "lacks model-00002-of-00002.safetensors"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_bad_sources_are_refused_before_any_write(source: Path, damage: object, match: str) -> None:
    damage(source)  # type: ignore[operator]
    refuse(QuantizeRequest(source, "fp8"), match)


def test_an_output_of_quant_tui_is_recognised_as_already_quantized(source: Path) -> None:
    first = quantize_model(QuantizeRequest(source, "int8-w8a8"))
    message = refuse(QuantizeRequest(first.output, "fp8"), "already quantized")
    assert "INT8 W8A8" in message


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(QuantTuiError, match="does not exist"):
        preflight(QuantizeRequest(tmp_path / "nowhere", "fp8"))


def test_an_unknown_method_is_refused(source: Path) -> None:
    refuse(QuantizeRequest(source, "int3"), "unknown method 'int3'")


def test_an_existing_output_is_never_overwritten(source: Path) -> None:
    target = source.parent / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    refuse(QuantizeRequest(source, "fp8", output=target), "already exists")
    assert (target / "keep.txt").read_text() == "mine"


def test_an_output_inside_the_source_is_refused(source: Path) -> None:
    refuse(QuantizeRequest(source, "fp8", output=source / "q"), "inside the source")


def test_w4a16_refuses_inputs_not_divisible_by_the_group_and_suggests_ignore(tmp_path: Path) -> None:
    source = build_tiny_llama(tmp_path / "odd", intermediate_size=320)
    message = refuse(QuantizeRequest(source, "w4a16"), "divisible by 128")
    assert "--ignore model.layers.0.mlp.down_proj" in message
    report = quantize_model(QuantizeRequest(source, "w4a16", ignore=("*.down_proj",)))
    assert report.tensors_quantized == 12


DiskUsage = namedtuple("DiskUsage", "total used free")


def test_not_enough_disk_space_is_refused_up_front(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.quantize.output_checks as output_checks

    monkeypatch.setattr(
        output_checks.shutil, "disk_usage", lambda _path: DiskUsage(10**12, 10**12 - 10**6, 10**6)
    )
    message = refuse(QuantizeRequest(source, "fp8"), "not enough disk space")
    assert "976.6 KiB is free" in message  # 10**6 bytes / 1024


def test_a_disk_filling_up_mid_write_leaves_nothing(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the fifth write hits ENOSPC, as a full filesystem would."""
    import engine.quantize.writer as writer

    real_pwrite = os.pwrite
    calls = {"count": 0}

    def pwrite_until_full(fd: int, data: object, offset: int) -> int:
        calls["count"] += 1
        if calls["count"] > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)  # type: ignore[arg-type]

    monkeypatch.setattr(writer.os, "pwrite", pwrite_until_full)
    before = siblings(source)
    with pytest.raises(QuantTuiError, match="disk filled up"):
        quantize_model(QuantizeRequest(source, "fp8"))
    assert siblings(source) == before


@pytest.mark.parametrize("stage", ["planning", "quantizing", "finishing"])
def test_cancelling_at_any_stage_leaves_nothing(source: Path, stage: str) -> None:
    cancel = threading.Event()

    def cancel_at_stage(progress: QuantizeProgress) -> None:
        if progress.stage == stage:
            cancel.set()

    before = siblings(source)
    with pytest.raises(QuantizeCancelled):
        quantize_model(QuantizeRequest(source, "w4a16"), on_progress=cancel_at_stage, cancel=cancel)
    assert siblings(source) == before


def test_ctrl_c_during_the_run_leaves_nothing_and_propagates(source: Path) -> None:
    def interrupt(progress: QuantizeProgress) -> None:
        if progress.stage == "quantizing":
            raise KeyboardInterrupt

    before = siblings(source)
    with pytest.raises(KeyboardInterrupt):
        quantize_model(
            QuantizeRequest(source, "fp8", output=source.parent / "new" / "deeper"), on_progress=interrupt
        )
    assert siblings(source) == before, "the staging folder or the created parents were left behind"


KILLED_RUN = """
import sys, time
from pathlib import Path
from engine.quantize.request import QuantizeRequest
from engine.quantize.runner import quantize_model

def stall(progress):
    if progress.stage in ("quantizing", "finishing"):
        print(progress.stage, flush=True)
        time.sleep(60)

quantize_model(QuantizeRequest(Path(sys.argv[1]), "fp8"), on_progress=stall)
"""


def test_a_killed_run_leaves_nothing_that_looks_complete_and_the_next_run_cleans_up(source: Path) -> None:
    before = siblings(source)
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(source)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    stage = process.stdout.readline().strip()
    assert stage in ("quantizing", "finishing")
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = siblings(source) - before
    assert left, "the run was killed after staging began, so its staging folder should still be there"
    assert all(name.startswith(".") and ".partial-" in name for name in left), left
    assert not any((source.parent / name / "config.json").exists() for name in left)
    report = quantize_model(QuantizeRequest(source, "fp8"))
    assert siblings(source) - before == {report.output.name}, "the stale staging folder was not removed"
