"""Which quantization methods run on a target and how (W8A8, weight-only), and their order per GPU generation and goal."""

from __future__ import annotations

from typing import Literal

from engine.hardware.detect import HardwareTarget
from engine.model.inspect_model import ModelInfo
from engine.plan.installed_vllm import VllmLimits
from engine.plan.methods import method as method_record

Goal = Literal["quality", "balanced", "memory", "throughput"]
GOALS: tuple[Goal, ...] = ("quality", "balanced", "memory", "throughput")
Execution = Literal["w8a8", "weight-only", "none"]

SPEED_NOTE = {
    "w8a8": "8-bit matmuls on tensor cores: the fastest prefill and batch throughput",
    "weight-only": "less memory traffic per token (faster decode), 16-bit matmuls",
    "none": "16-bit weights and math",
}

CPU_SPEED_NOTE = {
    "w8a8": "INT8 matmuls through oneDNN: the CPU backend's fastest path",
    "weight-only": "less memory traffic per token, dequantized inside the CPU kernels",
    "none": "16-bit weights and math",
}


def capability_number(target: HardwareTarget) -> int | None:
    """The target's compute capability as vLLM compares it (9.0 → 90); None for the CPU."""
    if target.kind == "cpu" or target.compute_capability is None:
        return None
    major, minor = target.compute_capability
    return major * 10 + minor


def execution_for(method: str, target: HardwareTarget, limits: VllmLimits | None = None) -> Execution | None:
    """How ``method`` runs on ``target``, or None when it can't run there.

    The limits are the bundled table's (vLLM 0.32/0.33), or ``limits`` probed from the installed vLLM.
    """
    if method == "bf16":
        return "none"
    record = method_record(method)
    capability = limits.apply(record.capability) if limits is not None else record.capability
    cc = capability_number(target)
    if cc is None:
        if not capability.cpu:
            return None
        if record.cpu_avx512_only and "avx512f" not in target.cpu_flags:
            return None
        return "w8a8" if method == "int8-w8a8" else "weight-only"
    if capability.w8a8_min is not None and cc >= capability.w8a8_min:
        return "w8a8"
    if capability.weight_only_min is not None and cc >= capability.weight_only_min:
        return "weight-only"
    return None


def preference_order(target: HardwareTarget, goal: Goal, model: ModelInfo) -> list[str]:
    """The flowchart: methods in order of preference for this hardware generation and goal."""
    cc = capability_number(target)
    small = model.params < 13e9
    if cc is None:  # vLLM's CPU backend: oneDNN INT8 W8A8 and the WNA16 kernel are the fast paths
        table = {
            "quality": ["bf16", "int8-w8a8", "w4a16", "fp8"],
            "balanced": ["int8-w8a8", "bf16", "w4a16", "fp8"],
            "memory": ["w4a16", "int8-w8a8", "bf16", "fp8"],
            "throughput": ["int8-w8a8", "w4a16", "bf16", "fp8"],
        }
    elif cc >= 100:  # Blackwell: FP8 and FP4 tensor cores
        table = {
            "quality": ["fp8", "bf16", "nvfp4", "w4a16", "int8-w8a8"],
            "balanced": ["fp8", "nvfp4", "w4a16", "bf16", "int8-w8a8"],
            "memory": ["nvfp4", "w4a16", "fp8", "mxfp4", "bf16"],
            "throughput": ["nvfp4", "fp8", "w4a16", "bf16"],
        }
    elif cc >= 89:  # Ada and Hopper: FP8 tensor cores
        table = {
            "quality": ["fp8", "bf16", "int8-w8a8", "w4a16", "nvfp4"],
            "balanced": ["fp8", "int8-w8a8", "w4a16", "bf16", "nvfp4"],
            "memory": ["w4a16", "nvfp4", "fp8", "int8-w8a8", "bf16"],
            "throughput": ["fp8", "int8-w8a8", "w4a16", "bf16"],
        }
    elif cc >= 80:  # Ampere: INT8 tensor cores; FP8 only as weight-only through Marlin
        table = {
            "quality": ["int8-w8a8", "w8a16", "bf16", "fp8", "w4a16"],
            "balanced": ["int8-w8a8", "w4a16", "w8a16", "fp8", "bf16"],
            "memory": ["w4a16", "int8-w8a8", "w8a16", "fp8", "bf16"],
            "throughput": ["int8-w8a8", "w4a16", "fp8", "bf16"],
        }
    elif cc >= 75:  # Turing: INT8 tensor cores, Marlin from 7.5 in vLLM 0.32
        table = {
            "quality": ["int8-w8a8", "w8a16", "bf16", "w4a16", "fp8"],
            "balanced": ["int8-w8a8", "w4a16", "w8a16", "bf16", "fp8"],
            "memory": ["w4a16", "int8-w8a8", "w8a16", "bf16"],
            "throughput": ["int8-w8a8", "w4a16", "bf16"],
        }
    else:  # Volta and older: nothing quantized runs in-tree; the plugins are the way out
        table = {goal_name: ["bf16", "bnb-8bit", "bnb-4bit", "gguf"] for goal_name in GOALS}
    order = list(table[goal])
    if small and goal in ("balanced", "quality") and "w4a16" in order:
        # 4-bit hurts small models most: keep 8-bit options ahead of it.
        order.remove("w4a16")
        order.append("w4a16")
    return order


def rank_reason(method: str, execution: Execution, target: HardwareTarget, goal: Goal, first: bool) -> str:
    """The first reason a candidate gives: how it runs here, and whether it heads the goal's list."""
    where = "the CPU backend" if target.kind == "cpu" else target.name
    if method == "bf16":
        return "the unquantized baseline: best quality, most memory"
    if execution == "w8a8":
        base = f"runs as real {method.upper()} matmuls on {where}"
    else:
        base = f"runs weight-only on {where}"
    return base + (f"; the first choice for goal '{goal}'" if first else "")


def speed_note(execution: Execution, target: HardwareTarget) -> str:
    """What the execution path means for speed on this kind of target."""
    return CPU_SPEED_NOTE[execution] if target.kind == "cpu" else SPEED_NOTE[execution]
