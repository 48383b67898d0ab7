"""Memory math for serving with vLLM: weight bytes per method, KV cache bytes, and what fits."""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.model.architecture import AttentionLayout, LayerAttention
from engine.model.checkpoint_size import WeightBytes
from engine.model.inspect_model import ModelInfo
from engine.model.param_count import ceil_div
from engine.plan import kv_cache
from engine.plan.gpu_block_size import DEFAULT_COMPUTE_CAPABILITY, gpu_block_size, is_mm_prefix_lm
from engine.plan.gpu_memory import GpuMemoryBreakdown, gpu_memory_breakdown
from engine.plan.kv_cache import (
    KvCapacity,
    block_size_for,
    host_has_amx,
    host_has_avx512_bf16,
    state_dtype_bytes,
)
from engine.plan.methods import method as method_record
from engine.plan.pipeline_stages import VOCAB_PADDING, PipelineStage, pipeline_stages, vocab_matrices
from engine.plan.vllm_facts import DEFAULT_GPU_MEMORY_UTILIZATION, GIB


def weight_bytes(model: ModelInfo, method: str, dtype_bytes: int = 2) -> WeightBytes:
    """Weight bytes of ``model`` served with ``method``.

    Counts what stays unquantized (embeddings, lm_head, norms, biases, routers) at the serving dtype
    and the per-channel or per-group scales and zero points of the quantized layers. A checkpoint
    that is already stored in ``method`` is served as it is: its own weight bytes (exact from the
    safetensors headers, else estimated from its format: gpt-oss keeps attention 16-bit, DeepSeek's
    FP8 has 128×128 block scales, GPTQ has group scales, zero points and g_idx), with ``quantized``
    holding values and scales together.
    """
    existing = model.quantization
    if existing is not None and existing.recommend_as == method and model.loaded_weight_bytes:
        unquantized_params = model.unquantized_params
        if model.vocab_bits is not None:  # GGUF: the vocabulary matrices are in its quantized bytes
            unquantized_params -= (
                model.vocab_size * model.hidden_size * (1 if model.tie_word_embeddings else 2)
            )
        unquantized = min(max(unquantized_params, 0) * dtype_bytes, model.loaded_weight_bytes)
        return WeightBytes(
            model.loaded_weight_bytes - unquantized, 0, unquantized, model.layer_bytes, model.vocab_bits
        )
    fmt = method_record(method).weights
    if method == "bf16":
        return WeightBytes(
            0, 0, model.params * dtype_bytes, tuple(p * dtype_bytes for p in model.layer_params)
        )
    quantized = math.ceil(model.linear_params * fmt.bits / 8)
    groups = model.linear_params / fmt.group_size if fmt.group_size else model.linear_out_features
    scales = math.ceil(groups * (fmt.scale_bytes + fmt.zero_point_bytes))
    # Each layer: its Linear weights at the method's bits with their share of the scales, the rest 16-bit.
    layers = tuple(
        math.ceil(linear * fmt.bits / 8)
        + scales * linear // max(model.linear_params, 1)
        + (params - linear) * dtype_bytes
        for params, linear in zip(model.layer_params, model.layer_linear_params, strict=True)
    )
    unquantized_params = model.unquantized_params
    vocab_bits = fmt.vocab_bits
    if vocab_bits is not None:  # GGUF: embed_tokens and lm_head in the file's types (vocab_matrices)
        embedding_params = model.vocab_size * model.hidden_size * (1 if model.tie_word_embeddings else 2)
        vocab = vocab_matrices(
            model.vocab_size, model.hidden_size, model.tie_word_embeddings, dtype_bytes, vocab_bits
        )
        quantized += vocab.stored
        unquantized_params -= min(embedding_params, unquantized_params)
    return WeightBytes(quantized, scales, unquantized_params * dtype_bytes, layers, vocab_bits)


def kv_bytes_per_token(model: ModelInfo, kv_dtype_bytes: float = 2, tensor_parallel_size: int = 1) -> int:
    """KV cache bytes one token takes on one device over all its layers.

    Standard attention: 2 (K and V) × layers × KV heads per rank × head dim × bytes, where each
    rank holds ``max(1, heads // tp)`` heads (vLLM replicates KV heads beyond that). MLA: one latent
    of ``kv_lora_rank + qk_rope_head_dim`` per layer, the same on every rank.
    """
    return kv_cache.kv_bytes_per_token(attention_of(model), kv_dtype_bytes, tensor_parallel_size)


def attention_of(model: ModelInfo) -> AttentionLayout:
    """The model's attention layout (all layers full attention when the model did not say)."""
    if model.attention is not None:
        return model.attention
    full: LayerAttention = "full"
    kinds = (full,) * model.num_layers
    return AttentionLayout(kinds, model.num_kv_heads, model.head_dim, model.head_dim)


def kv_capacity(
    kv_budget_bytes: int, bytes_per_token: int, max_model_len: int, block_size: int
) -> KvCapacity:
    """Turns a KV budget into vLLM's block count, token capacity and max concurrency, for one group.

    The uniform case (every layer full attention, ``bytes_per_token`` over all of them): the budget
    is cut into whole blocks of ``block_size`` tokens, and one request at ``max_model_len`` takes
    ``ceil(max_model_len / block_size)`` blocks. Hybrid models go through ``kv_cache.kv_capacity_for``.
    """
    layout = AttentionLayout(("full",), 1, bytes_per_token, 0)
    return kv_cache.kv_capacity_for(layout, kv_budget_bytes, max_model_len, block_size, 1, 0)


@dataclass(frozen=True, slots=True)
class Overhead:
    """Memory vLLM needs besides weights and KV cache, on one device."""

    activations: int
    runtime: int

    @property
    def total(self) -> int:
        """All of it."""
        return self.activations + self.runtime


def runtime_overhead(
    model: ModelInfo,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    tensor_parallel_size: int = 1,
    cpu: bool = False,
    dtype_bytes: int = 2,
) -> Overhead:
    """Estimates the activation peak of vLLM's profiling run plus the runtime's own memory.

    The profile run pushes ``max_num_batched_tokens`` through one layer at a time: the widest
    activations are the hidden states (a few copies) and the MLP's gate/up output on this device's
    shard; the sampler holds float32 logits for up to ``max_num_seqs`` sequences. On a GPU the
    runtime part is the CUDA context, cuBLAS workspaces and CUDA graphs (about 1.5 GiB; more with
    NCCL buffers under tensor parallelism); on the CPU backend it is the API server and engine
    processes with torch loaded (about 2 GiB).
    """
    hidden_states = 4 * model.hidden_size
    mlp = 2 * max(model.intermediate_size, 1) // tensor_parallel_size
    activations = max_num_batched_tokens * (hidden_states + mlp) * dtype_bytes
    logits = max_num_seqs * model.vocab_size * 4
    runtime = 2 * GIB if cpu else int(1.5 * GIB) + (GIB // 2 if tensor_parallel_size > 1 else 0)
    return Overhead(activations + logits, runtime)


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """How one device's memory splits when serving, and what that allows.

    Under pipeline parallelism it is the tightest rank's: the stage with the fewest KV blocks, whose
    count vLLM gives every stage (``get_kv_cache_configs``), so its capacity is the one vLLM logs.
    """

    device_memory_bytes: int
    memory_utilization: float
    weights_bytes: int
    overhead: Overhead
    kv_budget_bytes: int
    kv_bytes_per_token: int
    capacity: KvCapacity
    gpu_memory: GpuMemoryBreakdown | None = None

    @property
    def usable_bytes(self) -> int:
        """The share of device memory vLLM allows itself."""
        return int(self.device_memory_bytes * self.memory_utilization)


def padded_vocab_size(vocab_size: int) -> int:
    """The rows vLLM allocates for embed_tokens and the lm_head: ``pad_vocab_size`` to a multiple of 64.

    ``VocabParallelEmbedding`` and ``ParallelLMHead`` pad to ``DEFAULT_VOCAB_PADDING_SIZE`` (64) and
    split the padded rows over the tensor-parallel ranks, so 32,001 tokens take 32,064 rows.
    """
    return ceil_div(vocab_size, VOCAB_PADDING) * VOCAB_PADDING


def stage_layer_share(weights: WeightBytes, layers: range, num_layers: int) -> tuple[int, int]:
    """``(numerator, denominator)`` of the decoder bytes a stage's ``layers`` hold.

    Their own bytes over all layers' (``weights.layers``: a dense layer is a small part of a MoE
    one); layer counts when the per-layer bytes are not known.
    """
    if len(weights.layers) == num_layers and sum(weights.layers) > 0:
        return sum(weights.layers[layers.start : layers.stop]), sum(weights.layers)
    return len(layers), max(num_layers, 1)


def stage_weights_bytes(
    model: ModelInfo, weights: WeightBytes, stage: PipelineStage, dtype_bytes: int = 2
) -> int:
    """One pipeline stage's weight bytes over all its tensor-parallel ranks.

    The decoder layers' bytes (all but the vocabulary matrices, the final norm and any vision tower)
    are the stage's own layers' (``stage_layer_share``); the stage adds its own vocabulary matrices
    (``VocabMatrices.held_by``: at the serving dtype, or in the GGUF file's types when
    ``weights.vocab_bits`` says so, with vLLM's padded rows), the final norm on the last stage, and the
    vision tower, which every stage builds (vLLM's multimodal models make it without a pipeline
    check). One stage holds ``weights`` whole, plus the vocabulary padding.
    """
    vocab = vocab_matrices(
        model.vocab_size, model.hidden_size, model.tie_word_embeddings, dtype_bytes, weights.vocab_bits
    )
    if stage.rank == 0 and stage.holds_lm_head:
        return weights.total + vocab.held_by(stage) - vocab.stored
    final_norm = model.hidden_size * dtype_bytes
    vision = min(model.vision_params * dtype_bytes, weights.unquantized)
    decoder = max(0, weights.total - vocab.stored - final_norm - vision)
    held, of = stage_layer_share(weights, stage.layers, model.num_layers)
    layers = ceil_div(decoder * held, of)
    return layers + vocab.held_by(stage) + (final_norm if stage.holds_lm_head else 0) + vision


def plan_gpu(
    model: ModelInfo,
    weights: WeightBytes,
    device_memory_bytes: int,
    max_model_len: int,
    kv_dtype_bytes: float,
    tensor_parallel_size: int,
    pipeline_parallel_size: int,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
    enforce_eager: bool = False,
    dtype_bytes: int = 2,
    layer_partition: tuple[int, ...] | None = None,
    compute_capability: tuple[int, int] | None = None,
    kv_cache_dtype: str = "auto",
) -> DevicePlan:
    """Plans the tightest GPU's memory as vLLM's GPU worker does (see ``gpu_memory``), then its KV cache.

    requested (total × utilization) − weight shard − activation peak − non-torch − CUDA graphs
    = KV cache, per pipeline stage (``pipeline_stages``: its layers, the embedding on the first, the
    lm_head, final norm and sampler peak on the last; ``layer_partition`` is a checked
    ``VLLM_PP_LAYER_PARTITION``), each stage's weights (its own layers' bytes) split evenly over its
    tensor-parallel ranks.
    Each stage's KV cache holds its own layers; vLLM cuts every stage to the smallest block count,
    so that stage's plan is returned. ``dtype_bytes`` is the activation ``--dtype``'s (the profile
    run's peak scales with it; ``kv_dtype_bytes`` is the cache's). The block size is the attention
    backend's for the GPU's ``compute_capability`` (None: Hopper) and ``kv_cache_dtype``
    (``gpu_block_size``).
    """
    attention = attention_of(model)
    block_size = gpu_block_size(
        attention,
        compute_capability or DEFAULT_COMPUTE_CAPABILITY,
        kv_cache_dtype,
        is_mm_prefix_lm(model.architecture, model.is_multimodal),
    )
    # Async scheduling (the GPU default with PP 1) keeps two batches in flight; PP keeps one per stage.
    in_flight = (2 if pipeline_parallel_size == 1 else pipeline_parallel_size) * max_num_batched_tokens
    stages = pipeline_stages(
        model.num_layers, pipeline_parallel_size, model.tie_word_embeddings, layer_partition
    )
    plans: list[tuple[int, int, int, DevicePlan]] = []
    for stage in stages:
        weights_per_device = math.ceil(
            stage_weights_bytes(model, weights, stage, dtype_bytes) / tensor_parallel_size
        )
        memory = gpu_memory_breakdown(
            model,
            weights_per_device,
            device_memory_bytes,
            memory_utilization,
            max_num_batched_tokens,
            max_num_seqs,
            tensor_parallel_size,
            pipeline_parallel_size,
            enforce_eager,
            dtype_bytes,
            runs_sampler=stage.holds_lm_head,
        )
        overhead = Overhead(memory.activation_peak_bytes, memory.non_torch_bytes + memory.cudagraph_bytes)
        budget = memory.requested_bytes - memory.non_kv_bytes
        layers = stage.layers if len(stages) > 1 else None  # one stage: every layer that caches
        capacity = kv_cache.kv_capacity_for(
            attention,
            max(budget, 0),
            max_model_len,
            block_size,
            kv_dtype_bytes,
            in_flight,
            tensor_parallel_size,
            layers,
            state_bytes=None if attention.state is None else state_dtype_bytes(attention.state, dtype_bytes),
        )
        per_token = kv_cache.kv_bytes_per_token(attention, kv_dtype_bytes, tensor_parallel_size, layers)
        plan = DevicePlan(
            device_memory_bytes,
            memory_utilization,
            weights_per_device,
            overhead,
            max(budget, 0),
            per_token,
            capacity,
            memory,
        )
        plans.append((capacity.num_blocks, budget, stage.rank, plan))
    # The fewest blocks sets every stage's pool; among stages with none, the one furthest short of memory.
    return min(plans, key=lambda entry: entry[:3])[3]


def plan_cpu(
    model: ModelInfo,
    weights: WeightBytes,
    host_memory_bytes: int,
    max_model_len: int,
    kv_dtype_bytes: int,
    kv_cache_gib: int | None = None,
    max_num_batched_tokens: int = 2048,
    cpu_has_amx: bool | None = None,
    dtype_bytes: int = 2,
    max_num_seqs: int = 128,
    cpu_has_avx512_bf16: bool | None = None,
) -> DevicePlan:
    """Plans the CPU backend: the KV cache is a fixed ``VLLM_CPU_KVCACHE_SPACE`` (whole GiB).

    Without an explicit size, the KV space is what is left of host RAM after weights and runtime,
    rounded down to whole GiB, and capped so the host keeps a quarter of its RAM for everything else.
    The capacity is what vLLM's CPU start-up line reports for that space: block 128 (16 for MLA on a
    host without AMX; ``cpu_has_amx`` None reads this host), one batch of ``max_num_batched_tokens``
    in flight for the sliding-window layers; the activations (``max_num_batched_tokens`` tokens,
    ``max_num_seqs`` sampler rows) are in the ``--dtype`` of ``dtype_bytes``. Linear-attention and
    Mamba states follow the CPU's AVX-512 BF16 (``cpu_has_avx512_bf16`` None reads this host), with
    which vLLM keeps an unset temporal state in float32 (``kv_cache.state_dtype_bytes``).
    """
    overhead = runtime_overhead(
        model, max_num_batched_tokens, max_num_seqs, cpu=True, dtype_bytes=dtype_bytes
    )
    spare = int(host_memory_bytes * 0.75) - weights.total - overhead.total
    if kv_cache_gib is None:
        kv_cache_gib = max(0, spare // GIB)
    budget = kv_cache_gib * GIB
    per_token = kv_bytes_per_token(model, kv_dtype_bytes)
    attention = attention_of(model)
    amx = host_has_amx() if cpu_has_amx is None else cpu_has_amx
    block_size = block_size_for(attention, cpu=True, cpu_has_amx=amx)
    state_bytes = None
    if attention.state is not None:
        bf16 = host_has_avx512_bf16() if cpu_has_avx512_bf16 is None else cpu_has_avx512_bf16
        state_bytes = state_dtype_bytes(attention.state, dtype_bytes, bf16)
    capacity = kv_cache.kv_capacity_for(
        attention,
        budget,
        max_model_len,
        block_size,
        kv_dtype_bytes,
        max_num_batched_tokens,
        state_bytes=state_bytes,
    )
    return DevicePlan(host_memory_bytes, 0.75, weights.total, overhead, budget, per_token, capacity)
