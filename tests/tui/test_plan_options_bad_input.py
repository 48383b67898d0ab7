"""Bad values of the planning options recommend and serve share: one `quant-tui: error:` line, exit 2, nothing started."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.quant_tui_command import QUANT_TUI, REPO
from tests.tui.test_tui_snapshots import write_tiny_llama
from tui.cli import main

# (option, value, words the error line names)
BAD_VALUES = [
    ("--max-model-len", "0", ["--max-model-len", "at least 1"]),
    ("--max-model-len", "2k", ["--max-model-len", "whole number", "'2k'"]),
    ("--concurrency", "-3", ["--concurrency", "at least 1"]),
    ("--concurrency", "1.5", ["--concurrency", "whole number"]),
    ("--gpu-memory-utilization", "0", ["--gpu-memory-utilization", "(0, 1]"]),
    ("--gpu-memory-utilization", "1.2", ["--gpu-memory-utilization", "(0, 1]"]),
    ("--gpu-memory-utilization", "nan", ["--gpu-memory-utilization", "(0, 1]"]),
    ("--gpu-memory-utilization", "90%", ["--gpu-memory-utilization", "fraction such as 0.9"]),
    ("--kv-cache-dtype", "fp4", ["unknown KV cache dtype 'fp4'", "fp8_e4m3"]),
    ("--dtype", "int4", ["unknown --dtype 'int4'", "bfloat16"]),
    ("--max-num-seqs", "0", ["--max-num-seqs", "at least 1"]),
    ("--max-num-seqs", "many", ["--max-num-seqs", "whole number"]),
    ("--max-num-batched-tokens", "-1", ["--max-num-batched-tokens", "at least 1"]),
    ("--tensor-parallel-size", "0", ["--tensor-parallel-size", "at least 1"]),
    ("--cpu-kvcache-gib", "0", ["--cpu-kvcache-gib", "at least 1"]),
]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("bad-input") / "tiny-llama")


def _assert_one_line(code: int, err: str, words: list[str]) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("quant-tui: error: "), err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("option", "value", "words"), BAD_VALUES, ids=lambda v: v if isinstance(v, str) else ""
)
def test_recommend_refuses_a_bad_value_in_one_line(
    option: str, value: str, words: list[str], tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["recommend", "--model", str(tiny_llama), "--gpu", "H100", option, value])
    out, err = capsys.readouterr()
    _assert_one_line(code, err, words)
    assert out == ""


@pytest.mark.parametrize(
    ("option", "value", "words"), BAD_VALUES, ids=lambda v: v if isinstance(v, str) else ""
)
def test_serve_refuses_a_bad_value_before_anything_else(
    option: str, value: str, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before the model is looked at (a missing folder here) or any server is started."""
    code = main(["serve", "--model", str(tmp_path / "no-such-model"), option, value])
    out, err = capsys.readouterr()
    _assert_one_line(code, err, words)
    assert out == "" and "does not exist" not in err


def test_the_real_command_prints_one_line(tiny_llama: Path) -> None:
    """Through the `quant-tui` process, not argparse's usage block."""
    run = subprocess.run(
        [*QUANT_TUI, "serve", "--model", str(tiny_llama), "--dry-run", "--max-num-seqs", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    _assert_one_line(run.returncode, run.stderr, ["--max-num-seqs must be at least 1, got 0"])
    assert run.stdout == ""


def test_recommend_refuses_more_stages_than_gpus_in_one_line(
    tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """P × TP beyond the box's GPUs: 3 stages × TP 4 = 12 GPUs on an 8-GPU box."""
    argv = ["recommend", "--model", str(tiny_llama), "--gpu", "H100x8"]
    code = main([*argv, "--pipeline-parallel-size", "3", "--tensor-parallel-size", "4"])
    out, err = capsys.readouterr()
    _assert_one_line(code, err, ["--pipeline-parallel-size 3", "needs 12 GPUs and this box has 8"])
    assert out == ""
