"""Why vLLM 0.32 cannot load an already-quantized checkpoint: on the target's GPU, or anywhere (MoE experts)."""

from __future__ import annotations

from engine.errors import ModelError
from engine.hardware.detect import HardwareTarget
from engine.model.inspect_model import ModelInfo

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


def check_quantized_experts(model: ModelInfo) -> str | None:
    """Refuses a checkpoint whose routed experts vLLM cannot load; a note when that can't be told.

    Returns:
        A note for the plan when the checkpoint's headers don't show whether its experts are quantized
        (a config-only folder), else None.

    Raises:
        ModelError: the checkpoint is FP8 weight-only (fp8-w8a16) and its config gives the experts that scheme.
    """
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


def raise_unservable(model: ModelInfo, target: HardwareTarget) -> None:
    """Explains that an existing checkpoint's format can't run on the target."""
    assert model.quantization is not None
    raise ModelError(
        f"{model.name} is already quantized as {model.quantization.method} ({model.quantization.scheme}), "
        f"which vLLM 0.32 cannot run on {target.name}; start from the unquantized model"
    )
