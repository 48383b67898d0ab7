"""One GPU's memory at vLLM start-up, term by term, as the GPU worker's ``determine_available_memory`` splits it.

vLLM 0.32 (``v1/worker/gpu_worker.py``, ``utils/mem_utils.py``): requested = ceil(total ×
gpu_memory_utilization); the profile run of ``max_num_batched_tokens`` tokens (plus a sampler pass
over ``max_num_seqs`` rows, on the last pipeline stage only: ``gpu_model_runner.profile_run``) measures the weights, the torch activation peak and the non-torch
memory (CUDA context, cuBLAS, NCCL buffers); the CUDA-graph estimate is subtracted by default
(``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1``) unless ``--enforce-eager``. What is left is the KV cache.

The activation and non-torch terms are fitted to the per-GPU measurements the llm-d project
published for vLLM 0.19 on H100-80GB (llm-d-incubation/llm-d-planner,
``accuracy/results/v0.19.0/accuracy_report.md``): the peak is dominated by the sampler's float32
logits (about 14 bytes per row per vocabulary entry in bf16), plus the hidden states of the batch and, for
MoE models, the fused-MoE intermediate caches; non-torch memory is about 0.25 GiB on one GPU and
2.1 GiB per GPU once NCCL all-reduce buffers exist (TP ≥ 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.model.inspect_model import ModelInfo

GIB = 1024**3
# The sampler's own float32 copies of the logits (probs, logprobs, sort): 8 bytes a logit. With the
# lm_head's logits in a 16-bit --dtype (2 B) and the sampler's float32 cast of them (4 B) that is the
# 14 B a logit fitted to llm-d's bf16 runs; under float32 the logits are float32 already and the cast
# is the same tensor (torch's .to() of a tensor already in that dtype), so 4 + 8 = 12 B.
SAMPLER_FLOAT32_COPIES_BYTES = 8
FLOAT32_CAST_BYTES = 4
# Hidden states and residual of the profiled batch: about 2.5 copies in the activation --dtype
# (5 B an element in bf16, fitted to llm-d's runs).
HIDDEN_COPIES_TIMES_TWO = 5
NON_TORCH_SINGLE_GPU = int(0.25 * GIB)
NON_TORCH_TENSOR_PARALLEL = int(2.1 * GIB)
NON_TORCH_PIPELINE_ONLY = int(0.07 * GIB)
# llm-d measured CUDA graph pools of 0.51-1.85 GiB (mean 1.03 GiB) with the default capture sizes.
CUDA_GRAPH_ESTIMATE = int(1.0 * GIB)


@dataclass(frozen=True, slots=True)
class GpuMemoryBreakdown:
    """One GPU's memory as vLLM accounts for it at start-up, in bytes.

    Attributes:
        total_bytes: the GPU's memory (as NVML reports it, e.g. 79.19 GiB for an H100-80GB).
        gpu_memory_utilization: the share vLLM may use (``--gpu-memory-utilization``, default 0.92).
        requested_bytes: ``ceil(total × utilization)``.
        weights_bytes: this rank's share of the weights ("Model loading took X GiB").
        activation_peak_bytes: the torch peak of the profile run above the weights.
        non_torch_bytes: CUDA context, cuBLAS workspaces, NCCL buffers (grows with TP).
        cudagraph_bytes: the CUDA-graph estimate vLLM subtracts (0 with ``--enforce-eager``).
    """

    total_bytes: int
    gpu_memory_utilization: float
    requested_bytes: int
    weights_bytes: int
    activation_peak_bytes: int
    non_torch_bytes: int
    cudagraph_bytes: int

    @property
    def non_kv_bytes(self) -> int:
        """Everything but the KV cache inside the requested share."""
        return self.weights_bytes + self.activation_peak_bytes + self.non_torch_bytes + self.cudagraph_bytes

    @property
    def kv_cache_bytes(self) -> int:
        """ "Available KV cache memory": requested minus the rest (0 when the rest does not fit)."""
        return max(0, self.requested_bytes - self.non_kv_bytes)


def sampler_bytes_per_logit(dtype_bytes: int = 2) -> int:
    """Bytes one logit takes in the profile's sampler pass: the lm_head's output, its float32 cast, the copies."""
    cast = 0 if dtype_bytes == FLOAT32_CAST_BYTES else FLOAT32_CAST_BYTES
    return dtype_bytes + cast + SAMPLER_FLOAT32_COPIES_BYTES


def activation_peak_bytes(
    model: ModelInfo,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    tensor_parallel_size: int = 1,
    dtype_bytes: int = 2,
    runs_sampler: bool = True,
) -> int:
    """The profile run's torch peak: sampler logits + batch hidden states + fused-MoE caches.

    The sampler pass over ``min(max_num_seqs, tokens)`` rows of logits is not sharded by tensor
    parallelism (the logits are gathered), which is why llm-d measured the same activation peak at
    TP 1, 2 and 4. The hidden states and the fused-MoE caches are in the activation ``--dtype``
    (``dtype_bytes``: 2 for 16-bit, 4 for float32), and so are the lm_head's logits. Only the last
    pipeline stage runs the sampler (``runs_sampler``); the others send their hidden states on.
    """
    rows = min(max_num_seqs, max_num_batched_tokens) if runs_sampler else 0
    sampler = rows * model.vocab_size * sampler_bytes_per_logit(dtype_bytes)
    hidden = max_num_batched_tokens * model.hidden_size * HIDDEN_COPIES_TIMES_TWO * dtype_bytes // 2
    moe = 0
    if model.moe is not None:
        width = math.ceil(model.moe.expert_intermediate_size / tensor_parallel_size)
        routed = max_num_batched_tokens * model.moe.experts_per_token
        # intermediate_cache13 (max of the gate/up output and the down output) + intermediate_cache2.
        moe = routed * (max(2 * width, model.hidden_size) + width) * dtype_bytes
    return sampler + hidden + moe


def non_torch_bytes(tensor_parallel_size: int, pipeline_parallel_size: int = 1) -> int:
    """Memory outside torch's allocator that the profile sees: context and libraries, NCCL with TP."""
    if tensor_parallel_size > 1:
        return NON_TORCH_TENSOR_PARALLEL
    if pipeline_parallel_size > 1:
        return NON_TORCH_PIPELINE_ONLY
    return NON_TORCH_SINGLE_GPU


def gpu_memory_breakdown(
    model: ModelInfo,
    weights_per_rank: int,
    total_bytes: int,
    gpu_memory_utilization: float,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    tensor_parallel_size: int = 1,
    pipeline_parallel_size: int = 1,
    enforce_eager: bool = False,
    dtype_bytes: int = 2,
    runs_sampler: bool = True,
) -> GpuMemoryBreakdown:
    """Splits one GPU's memory as vLLM's ``determine_available_memory`` does.

    ``dtype_bytes`` is the activation --dtype's; ``runs_sampler`` is False on a pipeline stage before the last.
    """
    return GpuMemoryBreakdown(
        total_bytes=total_bytes,
        gpu_memory_utilization=gpu_memory_utilization,
        requested_bytes=math.ceil(total_bytes * gpu_memory_utilization),
        weights_bytes=weights_per_rank,
        activation_peak_bytes=activation_peak_bytes(
            model, max_num_batched_tokens, max_num_seqs, tensor_parallel_size, dtype_bytes, runs_sampler
        ),
        non_torch_bytes=non_torch_bytes(tensor_parallel_size, pipeline_parallel_size),
        cudagraph_bytes=0 if enforce_eager else CUDA_GRAPH_ESTIMATE,
    )
