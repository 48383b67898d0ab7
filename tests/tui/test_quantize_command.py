"""`quant-tui quantize`: JSON report, human summary, one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.quantize.quantize_support import build_tiny_llama
from tui.cli import main


def torch_sees_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("cli") / "tiny-llama")


@pytest.mark.parametrize("method", ["fp8", "int8-w8a8", "w4a16"])
def test_json_report_describes_the_written_checkpoint(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str
) -> None:
    out = tmp_path / "out"
    status = main(["quantize", "--model", str(tiny), "--method", method, "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert status == 0
    report = json.loads(captured.out)
    assert report["output"] == str(out) and report["method"] == method
    assert report["output_bytes"] == sum(path.stat().st_size for path in out.glob("*.safetensors"))
    assert report["ratio"] == pytest.approx(report["input_bytes"] / report["output_bytes"], rel=1e-3)
    assert len(report["layer_errors"]) == report["tensors_quantized"] == 14
    assert "quantizing" in captured.err or "done" in captured.err, "no progress on stderr"


def test_summary_names_size_ratio_and_worst_layers(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["quantize", "--model", str(tiny), "--method", "w4a16", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "smaller" in text and "worst layers" in text and "model.layers." in text and str(out) in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ignore", "*.nope"], "matches no Linear layer"),
        (["--out", "EXISTING"], "already exists"),
    ],
)
def test_bad_requests_exit_2_with_one_line(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    (tmp_path / "EXISTING").mkdir()
    extra = [str(tmp_path / "EXISTING") if item == "EXISTING" else item for item in extra]
    status = main(["quantize", "--model", str(tiny), "--method", "fp8", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("quant-tui: error: ") and message in err[-1]
    assert len([line for line in err if line.startswith("quant-tui")]) == 1


def test_unknown_method_is_an_argparse_error(tiny: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["quantize", "--model", str(tiny), "--method", "int3"])
    assert caught.value.code == 2


@pytest.mark.parametrize("method", ["fp8-block", "nvfp4a16", "gptq-w8a16"])
def test_dry_run_prints_the_cost_and_writes_nothing(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str
) -> None:
    out = tmp_path / "out"
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n\n".join("some typical text " * 20 for _ in range(4)))
    args = ["quantize", "--model", str(tiny), "--method", method, "--out", str(out), "--dry-run"]
    assert main([*args, "--calibration", str(calibration), "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert cost["method"] == method and cost["fits"] is True and cost["refusal"] is None
    assert cost["peak_ram_bytes"] > 0 and cost["disk_bytes"] > 0 and cost["seconds"] >= 0
    assert main([*args, "--calibration", str(calibration)]) == 0
    text = capsys.readouterr().out
    assert "peak memory" in text and "disk" in text and "time" in text and "fits" in text
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_dry_run_that_cannot_fit_exits_2_with_one_line(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from collections import namedtuple

    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: namedtuple("Memory", "available")(10**6))
    status = main(
        ["quantize", "--model", str(tiny), "--method", "fp8", "--out", str(tmp_path / "o"), "--dry-run"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("quant-tui: error: ") and "--workers 1" in err[-1]


def test_dry_run_names_the_device(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "quantize",
        "--model",
        str(tiny),
        "--method",
        "nvfp4a16",
        "--out",
        str(tmp_path / "o"),
        "--dry-run",
    ]
    assert main([*args, "--device", "cpu", "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert (cost["device"], cost["peak_gpu_bytes"]) == ("cpu", 0)
    assert main([*args, "--device", "cpu"]) == 0
    assert "  device       cpu\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("method", "device", "message"),
    [
        ("gptq-w4a16", "cpu", "--device cpu sets where the data-free methods compute"),
        *([] if torch_sees_cuda() else [("fp8", "cuda", "--device cuda: torch ")]),
    ],
)
def test_a_device_that_cannot_be_used_is_exit_2_with_one_line(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str, device: str, message: str
) -> None:
    out = tmp_path / "out"
    status = main(
        ["quantize", "--model", str(tiny), "--method", method, "--out", str(out), "--device", device]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("quant-tui: error: ") and message in err[-1]
    assert len([line for line in err if line.startswith("quant-tui")]) == 1
    assert not out.exists() and not list(tmp_path.glob(".out*"))
