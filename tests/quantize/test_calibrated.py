"""Calibrated methods: calibration input, pre-flight, the worker protocol, GPTQ layer errors, and (gated) a real run."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest

from engine.errors import QuantTuiError
from engine.quantize.calibrated import calibration_file, gptq_layer_errors, relay_progress
from engine.quantize.llmcompressor_worker import read_samples
from engine.quantize.request import QuantizeProgress, QuantizeRequest
from engine.quantize.runner import preflight, quantize_model
from tests.quantize.quantize_support import build_tiny_llama, complete, vllm_server

CALIBRATION_TEXT = "\n\n".join(f"paragraph {i} " + "word " * 60 for i in range(12))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("calibrated") / "tiny-llama")


@pytest.fixture
def calibration(tmp_path: Path) -> Path:
    path = tmp_path / "calibration.txt"
    path.write_text(CALIBRATION_TEXT)
    return path


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.txt", "first one\n\nsecond one\n\n\nthird", ["first one", "second one", "third"]),
        ("b.jsonl", '{"text": "alpha"}\n\n{"text": "beta"}\n', ["alpha", "beta"]),
        (
            "c.txt",
            " ".join(["w"] * 450),
            [" ".join(["w"] * 200), " ".join(["w"] * 200), " ".join(["w"] * 50)],
        ),
    ],
)
def test_worker_reads_paragraphs_jsonl_or_cuts_long_text(
    tmp_path: Path, name: str, content: str, expected: list[str]
) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert read_samples(path, 10) == expected
    assert read_samples(path, 1) == expected[:1]


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (None, "pass --calibration FILE"),
        ("missing", "is not a readable file"),
        ("tiny", "nearly empty"),
    ],
)
def test_calibration_input_is_checked(tiny: Path, tmp_path: Path, write: str | None, match: str) -> None:
    path = None
    if write == "missing":
        path = tmp_path / "nope.txt"
    elif write == "tiny":
        path = tmp_path / "tiny.txt"
        path.write_text("too short")
    request = QuantizeRequest(tiny, "gptq-w4a16", output=tmp_path / "out", calibration=path)
    with pytest.raises(QuantTuiError, match=match):
        calibration_file(request)
    with pytest.raises(QuantTuiError, match=match):
        preflight(request)


def test_the_demo_model_calibrates_on_the_shipped_corpus(tmp_path: Path) -> None:
    from engine.model.demo import COMPLETE_MARKER, demo_corpus_path

    demo = tmp_path / "demo-model"
    demo.mkdir()
    (demo / COMPLETE_MARKER).write_text("")
    request = QuantizeRequest(demo, "awq-w4a16")
    assert calibration_file(request) == demo_corpus_path("calibration")
    assert demo_corpus_path("calibration").stat().st_size > 1000


Memory = namedtuple("Memory", "total available")


def test_a_model_that_does_not_fit_in_memory_is_refused(
    tiny: Path, tmp_path: Path, calibration: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory(10**6, 10**5))
    with pytest.raises(QuantTuiError, match=r"loads the whole model.*streaming w4a16"):
        preflight(QuantizeRequest(tiny, "gptq-w4a16", output=tmp_path / "out", calibration=calibration))


def test_calibrated_methods_share_the_shape_checks(tmp_path: Path, calibration: Path) -> None:
    odd = build_tiny_llama(tmp_path / "odd", intermediate_size=320)
    with pytest.raises(QuantTuiError, match="divisible by 128"):
        preflight(QuantizeRequest(odd, "awq-w4a16", output=tmp_path / "out", calibration=calibration))


def test_worker_lines_become_progress_events() -> None:
    lines = [
        json.dumps({"stage": "loading", "message": "loading m"}),
        "some stray library output",
        json.dumps({"stage": "calibrating", "step": 3, "total": 8, "message": "(1/5): Calibrating"}),
        json.dumps({"stage": "done", "peak_rss_bytes": 12345}),
    ]
    events: list[QuantizeProgress] = []
    peak = relay_progress(io.StringIO("\n".join(lines) + "\n"), events.append)
    assert peak == 12345
    assert [(event.stage, event.message) for event in events] == [
        ("loading", "loading m"),
        ("calibrating", "(1/5): Calibrating batch 3/8"),
    ]


def test_gptq_layer_errors_read_packed_layers_like_the_data_free_report(tiny: Path, tmp_path: Path) -> None:
    """A data-free W4A16 checkpoint has GPTQ's layout: measuring it afterwards must give the same errors."""
    report = quantize_model(QuantizeRequest(tiny, "w4a16", output=tmp_path / "w4"))
    measured = {error.name: error.relative_error for error in gptq_layer_errors(tiny, report.output)}
    expected = {error.name: error.relative_error for error in report.layer_errors}
    assert measured.keys() == expected.keys()
    for name, value in expected.items():
        assert measured[name] == pytest.approx(value, rel=1e-5)


# Creating llm-compressor's environment took 97 s on the 2-core dev box (pip from the local wheel
# cache), so this runs with the other e2e tests instead of behind a marker of its own.
@pytest.mark.e2e
@pytest.mark.parametrize(
    ("method", "quant_format"),
    [
        ("gptq-w4a16", "pack-quantized"),
        ("awq-w4a16", "pack-quantized"),
        ("gptq-w8a16", "pack-quantized"),
        ("smoothquant-int8", "int-quantized"),
    ],
)
def test_llmcompressor_quantizes_the_demo_model_and_vllm_loads_it(
    demo_model: Path, tmp_path: Path, method: str, quant_format: str
) -> None:
    events: list[QuantizeProgress] = []
    started = time.monotonic()
    report = quantize_model(
        QuantizeRequest(demo_model, method, output=tmp_path / "out"), on_progress=events.append
    )
    print(f"\n{method}: {time.monotonic() - started:.0f} s including any environment install")
    stages = [event.stage for event in events]
    assert "calibrating" in stages and stages[-1] == "done"
    config = json.loads((report.output / "config.json").read_text())["quantization_config"]
    from compressed_tensors.quantization import QuantizationConfig

    QuantizationConfig.model_validate(config)
    assert config["format"] == quant_format
    assert report.tensors_quantized == 28 and report.ratio > 1.5
    if method.startswith("gptq-"):
        assert len(report.layer_errors) == 28 and report.layer_errors[0].relative_error < 0.5
    assert (report.output / "README.md").is_file() and (report.output / "tokenizer.json").is_file()
    from engine.plan.methods import method as method_record
    from tests.quantize.test_runner_e2e import missing_kernel

    reason = missing_kernel(method_record(method).format_name)
    if reason is not None:
        pytest.skip(f"checkpoint validated; not served here: {reason}")
    log = tmp_path / "vllm.log"
    with vllm_server(report.output, log) as base:
        answer = complete(base, report.output, "The quick brown fox")
    assert answer["choices"][0]["text"].strip()


MODEL_FREE_PTQ = """
import sys
from llmcompressor import model_free_ptq
model_free_ptq(model_stub=sys.argv[1], save_directory=sys.argv[2], scheme=sys.argv[3], ignore=["lm_head"],
               max_workers=1, device="cpu")
"""


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("method", "preset"), [("fp8", "FP8_DYNAMIC"), ("int8-w8a8", "W8A8"), ("w4a16", "W4A16")]
)
def test_data_free_output_is_bit_identical_to_llmcompressor_model_free_ptq(
    tiny: Path, tmp_path: Path, method: str, preset: str
) -> None:
    """The reference implementation, run in its own environment on the same checkpoint, writes the same bytes."""
    import subprocess

    from engine.quantize.llmcompressor_env import ensure_llmcompressor_env
    from tests.quantize.test_runner import load_all
    from tests.quantize.test_schemes import same_bits

    python = ensure_llmcompressor_env()
    theirs_dir = tmp_path / "theirs"
    subprocess.run([str(python), "-c", MODEL_FREE_PTQ, str(tiny), str(theirs_dir), preset], check=True)
    ours = load_all(quantize_model(QuantizeRequest(tiny, method, output=tmp_path / "ours")).output)
    theirs = load_all(theirs_dir)
    # model_free_ptq knows no module types and also quantizes the embedding, which vLLM keeps 16-bit.
    theirs = {name: tensor for name, tensor in theirs.items() if not name.startswith("model.embed_tokens.")}
    ours.pop("model.embed_tokens.weight")
    assert ours.keys() == theirs.keys()
    assert [name for name in ours if not same_bits(ours[name], theirs[name])] == []


@pytest.mark.e2e
def test_a_killed_quant_tui_leaves_no_calibration_or_install_running(
    demo_model: Path, tmp_path: Path
) -> None:
    """SIGKILL the real ``quant-tui quantize --method gptq-w4a16``: its child (llm-compressor's worker, or the
    pip install of its environment on first use) and the watchdog are gone within seconds."""
    from tests.process_tree import cmdline, signal_and_check, wait_for_tree
    from tests.quant_tui_command import start_quant_tui

    out = tmp_path / "out"
    app = start_quant_tui(
        ["quantize", "--method", "gptq-w4a16", "--model", str(demo_model), "--out", str(out)],
        dict(os.environ),
    )

    def worker_and_watchdog(tree: list[Any]) -> bool:
        lines = [cmdline(process) for process in tree]
        watched = any("engine.process.watchdog" in line for line in lines)
        working = any(
            marker in line for line in lines for marker in ("llmcompressor_worker", "pip install", "-m venv")
        )
        return watched and working

    tree = wait_for_tree(app.pid, worker_and_watchdog, 120, lambda: app.poll() is None)
    # Checks the app, its tree and their process groups are gone within GONE_WITHIN_S.
    signal_and_check(app, signal.SIGKILL, tree)
    assert not out.exists()
