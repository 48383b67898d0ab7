"""engine/plan/vllm_facts.py must agree with the installed vLLM's own capability checks and defaults."""

from __future__ import annotations

import importlib

import pytest

from engine.plan import vllm_facts
from engine.plan.installed_vllm import installed_vllm_version

QUANT = "vllm.model_executor.layers.quantization"
SCHEMES = f"{QUANT}.compressed_tensors.schemes"

# (module, class, the capability quant-tui assumes): each limit the recommender relies on.
CHECKS = [
    (
        f"{SCHEMES}.compressed_tensors_w8a8_fp8",
        "CompressedTensorsW8A8Fp8",
        vllm_facts.CT_FP8.w8a8_min,
    ),
    (
        f"{SCHEMES}.compressed_tensors_w8a16_fp8",
        "CompressedTensorsW8A16Fp8",
        vllm_facts.CT_FP8.weight_only_min,
    ),
    (
        f"{SCHEMES}.compressed_tensors_w8a16_fp8",
        "CompressedTensorsW8A16Fp8",
        vllm_facts.CT_FP8_W8A16.weight_only_min,
    ),
    (
        f"{SCHEMES}.compressed_tensors_w8a8_int8",
        "CompressedTensorsW8A8Int8",
        vllm_facts.CT_INT8_W8A8.w8a8_min,
    ),
    (
        f"{SCHEMES}.compressed_tensors_wNa16",
        "CompressedTensorsWNA16",
        vllm_facts.CT_WNA16.weight_only_min,
    ),
    (
        f"{SCHEMES}.compressed_tensors_w4a4_nvfp4",
        "CompressedTensorsW4A4Fp4",
        vllm_facts.CT_NVFP4.weight_only_min,
    ),
    (f"{QUANT}.mxfp4", "Mxfp4Config", vllm_facts.MXFP4.weight_only_min),
    (f"{QUANT}.modelopt", "ModelOptFp8Config", vllm_facts.MODELOPT_FP8.weight_only_min),
    ("vllm.model_executor.kernels.linear.mixed_precision.marlin", "MarlinLinearKernel", 75),
]


def test_facts_are_for_the_installed_vllm() -> None:
    version = installed_vllm_version()
    assert version is not None, "vLLM is not installed; run scripts/bootstrap.sh"
    assert ".".join(version.split("+")[0].split(".")[:2]) in vllm_facts.SUPPORTED_VLLM_SERIES


@pytest.mark.parametrize(
    ("version", "admitted"),
    [
        ("0.31.0", False),
        ("0.32.0", True),
        ("0.32.1", True),
        ("0.33.0", True),
        ("0.33.2", True),
        ("0.34.0", False),
    ],
)
def test_gpu_extra_pins_the_series_the_facts_hold(version: str, admitted: bool) -> None:
    from pathlib import Path

    import tomllib
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    (vllm,) = [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["gpu"]]
    assert vllm.name == "vllm"
    assert vllm.specifier.contains(version) is admitted


@pytest.mark.parametrize(("module", "name", "expected"), CHECKS)
def test_min_capability_matches_vllm(module: str, name: str, expected: int | None) -> None:
    cls = getattr(importlib.import_module(module), name, None)
    if cls is None:  # renamed or removed upstream
        pytest.fail(f"{module}.{name} is gone: update engine/plan/vllm_facts.py for this vLLM")
    assert cls.get_min_capability() == expected


def test_plugin_only_methods_are_not_built_in() -> None:
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    for method in ("bitsandbytes", "gguf"):
        assert method not in QUANTIZATION_METHODS


def test_gpu_memory_utilization_default() -> None:
    from vllm.config.cache import CacheConfig

    field = CacheConfig.__dataclass_fields__["gpu_memory_utilization"]  # a pydantic dataclass
    assert field.default.default == vllm_facts.DEFAULT_GPU_MEMORY_UTILIZATION


def test_fp8_weight_only_checkpoints_never_run_w8a8_and_have_no_cpu_kernel() -> None:
    # vllm_facts.CT_FP8_W8A16: a config group without input_activations is no W8A8 scheme, a W8A16 one
    # (compressed_tensors.py::_get_scheme_from_parts), and its kernels are CUDA's and XPU's only.
    from compressed_tensors.quantization import QuantizationArgs
    from vllm.model_executor.kernels.linear import _POSSIBLE_WFP8A16_KERNELS
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (
        CompressedTensorsConfig,
    )
    from vllm.platforms import PlatformEnum

    weights = QuantizationArgs(num_bits=8, type="float", symmetric=True, strategy="channel", dynamic=False)
    assert not CompressedTensorsConfig._is_fp8_w8a8(weights, None)
    assert CompressedTensorsConfig._is_fp8_w8a16(weights, None)
    assert _POSSIBLE_WFP8A16_KERNELS[PlatformEnum.CPU] == []
    assert vllm_facts.CT_FP8_W8A16.w8a8_min is None and not vllm_facts.CT_FP8_W8A16.cpu


def _fp8_weight_only_moe_config(
    strategy: str, extra_ignore: list[str], targets: list[str]
) -> dict[str, object]:
    # llm-compressor's FP8 weight-only recipes on an MoE model (its Qwen3-MoE examples ignore the routers,
    # re:.*mlp.gate$): RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8's config without input_activations.
    import copy

    from tests.plan.model_configs import published_config

    config = copy.deepcopy(published_config("llama-3.1-8b-instruct-fp8")["quantization_config"])
    config.update(format="float-quantized", ignore=["lm_head", "re:.*mlp.gate$", *extra_ignore])
    group = config["config_groups"]["group_0"]
    group.update(input_activations=None, targets=targets)
    group["weights"].update(strategy=strategy, block_structure=[128, 128] if strategy == "block" else None)
    return config


# vLLM 0.32 compressed_tensors_moe.py::get_moe_method on FP8 weight-only experts, read by hand: channel
# weights pass _is_wNa16_group_channel and fail its pack-quantized check (ValueError "For Fused MoE layers,
# only format: pack-quantized ..."); tensor and block weights reach _is_dynamic_token_w8a8, which reads
# input_quant.num_bits of None (AttributeError); experts ignored or not targeted load unquantized.
FP8_WEIGHT_ONLY_EXPERTS = [
    ("channel", [], ["Linear"], "ValueError"),
    ("tensor", [], ["Linear"], "AttributeError"),
    ("block", [], ["Linear"], "AttributeError"),
    ("channel", [], ["re:.*experts.*"], "ValueError"),
    ("channel", ["re:.*mlp.experts.*"], ["Linear"], "unquantized"),
    ("channel", [], ["re:.*self_attn.*"], "unquantized"),
]


@pytest.mark.parametrize(("strategy", "extra_ignore", "targets", "outcome"), FP8_WEIGHT_ONLY_EXPERTS)
def test_fp8_weight_only_experts_do_not_load(
    strategy: str, extra_ignore: list[str], targets: list[str], outcome: str
) -> None:
    """vllm_facts.CT_FP8_W8A16's MoE note: the planner refuses such checkpoints (engine/plan/checkpoint_limits)."""
    from vllm.model_executor.layers.fused_moe import RoutedExperts
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (
        CompressedTensorsConfig,
    )
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors_moe.compressed_tensors_moe import (
        CompressedTensorsMoEMethod,
    )

    config = CompressedTensorsConfig.from_config(_fp8_weight_only_moe_config(strategy, extra_ignore, targets))
    # A RoutedExperts with only what get_moe_method reads (Qwen3-MoE's projection names); building a real
    # one needs a running vLLM config.
    layer = RoutedExperts.__new__(RoutedExperts)
    layer.__dict__.update(
        ckpt_gate_proj_name="gate_proj",
        ckpt_up_proj_name="up_proj",
        ckpt_down_proj_name="down_proj",
        moe_config=None,
    )
    if outcome == "unquantized":  # get_moe_method's UnquantizedFusedMoEMethod, which needs a vLLM config
        config._add_fused_moe_to_target_scheme_map()
        names = [f"model.layers.0.mlp.experts.0.{proj}" for proj in ("gate_proj", "up_proj", "down_proj")]
        assert [config.get_scheme_dict(layer, name) for name in names] == [None, None, None]
        return
    with pytest.raises((ValueError, AttributeError)) as raised:
        CompressedTensorsMoEMethod.get_moe_method(config, layer, "model.layers.0.mlp.experts")
    assert type(raised.value).__name__ == outcome
