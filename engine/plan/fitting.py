"""Fits one candidate's weights and KV cache onto the target: TP size, pipeline stages over boxes, CPU KV space."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from engine.errors import ModelError, QuantTuiError
from engine.hardware.detect import HardwareTarget
from engine.model.checkpoint_size import WeightBytes
from engine.model.inspect_model import ModelInfo
from engine.plan.kv_cache import KvCapacity, sparse_mla_kv_dtype
from engine.plan.memory import DevicePlan, attention_of, plan_cpu, plan_gpu
from engine.plan.pipeline_stages import check_layer_partition
from engine.plan.plan_request import PlanRequest, dtype_bytes
from engine.plan.server_plan import CpuKvSpace, available_ram_bytes, cpu_kv_space
from engine.plan.tp_divisibility import TpCheck, scale_block_widths, tp_refusal
from engine.plan.vllm_facts import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    GIB,
    default_max_num_batched_tokens,
    default_max_num_seqs,
)

# Pipeline stages tried when one box is too small (boxes of the same GPUs, joined by Ray).
PIPELINE_STAGES_TRIED = (2, 3, 4, 6, 8)


@dataclass(frozen=True, slots=True)
class DeviceFit:
    """How a candidate fits the target.

    Attributes:
        plan: one device's memory plan.
        tensor_parallel_size: GPUs per box the model is split over.
        kv_cache_dtype: the ``--kv-cache-dtype`` planned.
        machines_needed: when one box is too small, boxes like it that would fit as pipeline stages.
        cpu_space: the CPU backend's KV space and why (None on a GPU).
        pipeline_parallel_size: pipeline stages (the boxes, with ``--nodes``).
        max_num_batched_tokens: vLLM's batch the plan assumes (given or its default).
        max_num_seqs: vLLM's sequence limit the plan assumes (given or its default).
        skipped_tp: why TP sizes this box has GPUs for were left out (a scale block split), if any.
    """

    plan: DevicePlan
    tensor_parallel_size: int
    kv_cache_dtype: str
    machines_needed: int | None = None
    cpu_space: CpuKvSpace | None = None
    pipeline_parallel_size: int = 1
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 128
    skipped_tp: str | None = None

    @property
    def reasons(self) -> tuple[str, ...]:
        """What the fit adds to its candidate's reasons: the CPU KV space's, the TP sizes left out."""
        return tuple(r for r in (self.cpu_space.reason if self.cpu_space else None, self.skipped_tp) if r)


def kv_dtype_bytes(kv_cache_dtype: str, dtype: str = "auto") -> int:
    """Bytes per KV element for a ``--kv-cache-dtype`` (``auto`` is the model's serving ``--dtype``)."""
    return 1 if kv_cache_dtype.startswith("fp8") else dtype_bytes(dtype)


def heads_refusal(model: ModelInfo, tensor_parallel_size: int) -> str | None:
    """Why vLLM does not split the heads at this TP size, or None when it does.

    Query heads split evenly (ModelConfig.verify_with_parallel_config); K/V heads evenly or, when fewer than the
    ranks, replicated a whole number of times (QKVParallelLinear's divide()).
    """
    tp, heads, kv_heads = tensor_parallel_size, model.num_attention_heads, model.num_kv_heads
    if heads % tp:
        return f"vLLM needs the {heads} attention heads to divide evenly over the ranks"
    if kv_heads > 0 and (kv_heads % tp if kv_heads >= tp else tp % kv_heads):
        return f"vLLM splits the {kv_heads} KV heads evenly or copies them whole onto the ranks, and {tp} does neither"
    return None


def tp_options(target: HardwareTarget, model: ModelInfo, widths: tuple[TpCheck, ...] = ()) -> list[int]:
    """Tensor-parallel sizes vLLM accepts on this box: up to its GPU count, splitting the heads (``heads_refusal``).

    ``widths`` (``scale_block_widths``) also drops the sizes at which a layer's share per rank is not whole
    scale blocks (ModelOpt, block FP8).
    """
    if target.kind == "cpu":
        return [1]
    options = [
        tp
        for tp in (1, 2, 4, 8)
        if tp <= target.count and heads_refusal(model, tp) is None and tp_refusal(widths, tp) is None
    ]
    return options or [1]


def skipped_tp_reason(target: HardwareTarget, model: ModelInfo, widths: tuple[TpCheck, ...]) -> str | None:
    """Which TP sizes ``widths`` drops on this box, and vLLM's reason for the smallest (None: none dropped)."""
    dropped = [
        tp
        for tp in (2, 4, 8)
        if tp <= target.count and heads_refusal(model, tp) is None and tp_refusal(widths, tp)
    ]
    if not dropped:
        return None
    sizes = " and ".join(str(tp) for tp in dropped)
    return f"tensor parallel {sizes} left out: {tp_refusal(widths, dropped[0])}"


def check_tp_size(tensor_parallel_size: int, model: ModelInfo, widths: tuple[TpCheck, ...]) -> None:
    """A ``--tensor-parallel-size`` asked for that vLLM can't split the heads or a layer's scale blocks at.

    Raises:
        QuantTuiError: one line with vLLM's reason and the sizes that build.
    """

    def refusal(tp: int) -> str | None:
        return heads_refusal(model, tp) or tp_refusal(widths, tp)

    why = refusal(tensor_parallel_size)
    if why is None:
        return
    working = [tp for tp in (1, 2, 4, 8) if refusal(tp) is None]
    raise QuantTuiError(
        f"--tensor-parallel-size {tensor_parallel_size}: {why}",
        f"use --tensor-parallel-size {' or '.join(map(str, working))}"
        if working
        else "start from the unquantized model",
    )


def scheduler_limits(target: HardwareTarget, request: PlanRequest) -> tuple[int, int]:
    """``--max-num-batched-tokens`` and ``--max-num-seqs``: as asked, else vLLM's defaults for this device."""
    cpu = target.kind == "cpu"
    batched = request.max_num_batched_tokens or default_max_num_batched_tokens(
        target.memory_bytes, target.name, cpu=cpu
    )
    seqs = request.max_num_seqs or default_max_num_seqs(target.memory_bytes, target.name, cpu=cpu)
    return batched, seqs


@dataclass(frozen=True, slots=True)
class _Sizing:
    """What every fit of one candidate shares: its KV dtype and bytes, the activation bytes, vLLM's scheduler limits."""

    kv_cache_dtype: str
    kv_bytes: int
    activation_bytes: int
    batched: int
    seqs: int

    def fit(
        self,
        plan: DevicePlan,
        tp: int = 1,
        pp: int = 1,
        machines: int | None = None,
        cpu_space: CpuKvSpace | None = None,
        skipped_tp: str | None = None,
    ) -> DeviceFit:
        return DeviceFit(
            plan, tp, self.kv_cache_dtype, machines, cpu_space, pp, self.batched, self.seqs, skipped_tp
        )


def fit_on_target(
    model: ModelInfo,
    target: HardwareTarget,
    weights: WeightBytes,
    max_model_len: int,
    request: PlanRequest,
    kv_cache_dtype: str,
) -> DeviceFit:
    """Finds the smallest TP size on this box that fits; if none does, the largest, and how many boxes would.

    With ``request.nodes`` above 1 the layout is vLLM's multi-node one: TP = the GPUs of one box
    (or the TP asked for), PP = the boxes. On the CPU backend it sizes VLLM_CPU_KVCACHE_SPACE.
    """
    sizing = _Sizing(
        kv_cache_dtype,
        kv_dtype_bytes(kv_cache_dtype, request.dtype),
        dtype_bytes(request.dtype),
        *scheduler_limits(target, request),
    )
    partition = request.layer_partition
    if partition is not None:  # vLLM refuses a partition that does not match, one stage included
        check_layer_partition(partition, model.num_layers, request.stages)
    if target.kind == "cpu":
        return _fit_cpu(model, target, weights, max_model_len, request, sizing)
    util = request.gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION
    # DeepSeek Sparse Attention models keep their latent in the dtype the GPU's sparse backend stores.
    major = target.compute_capability[0] if target.compute_capability else 0
    _, sparse_latent_bytes = sparse_mla_kv_dtype(attention_of(model), model.model_type, kv_cache_dtype, major)
    latent_bytes = sizing.kv_bytes if sparse_latent_bytes is None else sparse_latent_bytes

    def plan(tp: int, pp: int) -> DevicePlan:
        return plan_gpu(
            model,
            weights,
            target.memory_bytes,
            max_model_len,
            latent_bytes,
            tp,
            pp,
            sizing.batched,
            sizing.seqs,
            util,
            dtype_bytes=sizing.activation_bytes,
            # The partition is the asked stages'; a search over more boxes plans vLLM's own split.
            layer_partition=partition if partition is not None and len(partition) == pp else None,
            compute_capability=target.compute_capability,
            kv_cache_dtype=kv_cache_dtype,
        )

    check_layout(request, target)
    widths = scale_block_widths(model)
    if (unsplit := tp_refusal(widths, 1)) is not None:  # no TP size builds it
        raise ModelError(
            f"{model.name}: {unsplit}",
            "re-export it keeping that module 16-bit (ModelOpt's exclude_modules, the ignore list), "
            "or start from the unquantized model",
        )
    if request.tensor_parallel_size:
        check_tp_size(request.tensor_parallel_size, model, widths)
    skipped = None if request.tensor_parallel_size else skipped_tp_reason(target, model, widths)
    stages = request.stages
    if request.nodes > 1:
        tp = request.tensor_parallel_size or max(tp_options(target, model, widths))
        return sizing.fit(plan(tp, stages), tp, stages, skipped_tp=skipped)
    # The smallest TP per stage that fits this one box (P × TP within its GPUs; P is 1 unless asked).
    fitting = [tp for tp in tp_options(target, model, widths) if tp * stages <= target.count] or [1]
    options = [request.tensor_parallel_size] if request.tensor_parallel_size else fitting
    for tp in options:
        one_box = plan(tp, stages)
        if one_box.capacity.max_concurrency >= request.concurrency:
            return sizing.fit(one_box, tp, stages, skipped_tp=skipped)
    if stages > 1:  # the stages asked for stay on this box: no search over boxes
        return sizing.fit(one_box, tp, stages, skipped_tp=skipped)
    # Several boxes of this GPU: pipeline stages across boxes, tensor parallel within each.
    for pp in PIPELINE_STAGES_TRIED:
        if plan(tp, pp).capacity.max_concurrency >= request.concurrency:
            return sizing.fit(one_box, tp, machines=pp, skipped_tp=skipped)
    return sizing.fit(one_box, tp, skipped_tp=skipped)


def check_layout(request: PlanRequest, target: HardwareTarget) -> None:
    """The stages × TP asked for fit the GPUs: P × TP on one box, TP within a box with ``--nodes``.

    Raises:
        QuantTuiError: one line naming the sizes and the GPUs there are.
    """
    stages, tp, gpus = request.stages, request.tensor_parallel_size, target.count
    if request.nodes > 1:
        if tp and tp > gpus:
            raise QuantTuiError(
                f"--tensor-parallel-size {tp} exceeds the {gpus} GPUs of one box; with --nodes a tensor-parallel group stays in one box",
                f"use --tensor-parallel-size {gpus} or less",
            )
        if stages != request.nodes:  # the Ray steps and the GPU check count one stage per box
            raise QuantTuiError(
                f"--pipeline-parallel-size {stages} with --nodes {request.nodes}: quant-tui plans one pipeline "
                "stage per box",
                f"use --pipeline-parallel-size {request.nodes}, or leave it out",
            )
        return
    if stages > 1 and stages * (tp or 1) > gpus:
        raise QuantTuiError(
            f"--pipeline-parallel-size {stages} × --tensor-parallel-size {tp or 1} needs {stages * (tp or 1)} GPUs "
            f"and this box has {gpus}",
            "lower either, or add --nodes N to spread the stages over boxes",
        )


def _fit_cpu(
    model: ModelInfo,
    target: HardwareTarget,
    weights: WeightBytes,
    max_model_len: int,
    request: PlanRequest,
    sizing: _Sizing,
) -> DeviceFit:
    """Sizes VLLM_CPU_KVCACHE_SPACE with the one CPU rule (or the size asked for) and plans with it."""

    def plan(gib: int) -> DevicePlan:
        return plan_cpu(
            model,
            weights,
            target.memory_bytes,
            max_model_len,
            sizing.kv_bytes,
            gib,
            sizing.batched,
            dtype_bytes=sizing.activation_bytes,
            max_num_seqs=sizing.seqs,
        )

    if request.cpu_kvcache_gib is not None:
        return sizing.fit(plan(request.cpu_kvcache_gib))
    # Capacity grows linearly with the KV space: one GiB's worth says what the request needs.
    per_gib = plan(1).capacity
    needed = math.ceil(request.concurrency * GIB / per_gib.max_concurrency) if per_gib.max_concurrency else 0
    available = request.available_ram_bytes
    if available is None:
        available = available_ram_bytes()
    space = cpu_kv_space(needed, available, weights.total)
    planned = plan(space.gib)
    # Whole blocks and vLLM's null block can make the rounded size one GiB short.
    while not _enough(planned.capacity, request.concurrency) and space.gib < max(space.limit_gib, 1):
        space = replace(space, gib=space.gib + 1)
        planned = plan(space.gib)
    return sizing.fit(planned, cpu_space=space)


def _enough(capacity: KvCapacity, concurrency: int) -> bool:
    return capacity.fits_one_sequence and capacity.max_concurrency >= concurrency
