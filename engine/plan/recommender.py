"""Ranks quantization methods for a model on a target machine, with memory math, reasons and vLLM args."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from engine.hardware.detect import HardwareTarget
from engine.model.inspect_model import ModelInfo, human_params
from engine.plan.memory import DevicePlan, KvCapacity, WeightBytes, plan_cpu, plan_gpu, weight_bytes
from engine.plan.methods import default_output_dir, make_it_line
from engine.plan.methods import method as method_record
from engine.plan.server_config import Prediction, ServerConfig
from engine.plan.server_plan import (
    CalibrationKey,
    CpuKvSpace,
    available_ram_bytes,
    cpu_kv_space,
    load_calibration,
)
from engine.plan.vllm_facts import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    GIB,
    VLLM_VERSION,
    default_max_num_batched_tokens,
    default_max_num_seqs,
)
from engine.units import format_bytes

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


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """What the user wants to serve, and how.

    Attributes:
        max_model_len: context length per request (None: the model's own maximum, capped at 32k).
        concurrency: sequences that must fit at that context at once.
        kv_cache_dtype: "auto" or "fp8"; None lets the recommender choose per candidate.
        tensor_parallel_size: force a TP size; None picks the smallest that fits.
        cpu_kvcache_gib: force the CPU backend's KV space; None applies ``server_plan.cpu_kv_space``.
        available_ram_bytes: RAM available on the CPU host; None reads it now (psutil).
        gpu_memory_utilization: vLLM's ``--gpu-memory-utilization``; None is its default.
        calibration_file: GPU calibrations to apply; None reads the user's cache, and a path
            that does not exist applies none.
    """

    max_model_len: int | None = None
    concurrency: int = 1
    goal: Goal = "balanced"
    kv_cache_dtype: str | None = None
    tensor_parallel_size: int | None = None
    cpu_kvcache_gib: int | None = None
    available_ram_bytes: int | None = None
    gpu_memory_utilization: float | None = None
    calibration_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """One way to serve the model, with its memory plan and the reasoning behind it.

    ``server`` is the one server plan; ``vllm_args`` and ``env`` are its rendering for display.
    """

    method: str
    execution: Execution
    weights: WeightBytes
    kv_cache_dtype: str
    kv_cache_bytes_per_token: int
    fits: bool
    tensor_parallel_size: int
    machines_needed: int | None
    max_concurrency: float
    kv_cache_tokens: int
    plan: DevicePlan
    model_dir: str
    server: ServerConfig
    vllm_args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]
    trade_off: str
    needs_quantization: bool


@dataclass(frozen=True, slots=True)
class Recommendation:
    """Candidates best first, for one model on one target."""

    hardware: HardwareTarget
    model: ModelInfo
    request: PlanRequest
    max_model_len: int
    candidates: tuple[Candidate, ...]
    notes: tuple[str, ...]

    @property
    def best(self) -> Candidate:
        """The top candidate."""
        return self.candidates[0]


def capability_number(target: HardwareTarget) -> int | None:
    """The target's compute capability as vLLM compares it (9.0 → 90); None for the CPU."""
    if target.kind == "cpu" or target.compute_capability is None:
        return None
    major, minor = target.compute_capability
    return major * 10 + minor


def execution_for(method: str, target: HardwareTarget) -> Execution | None:
    """How ``method`` runs on ``target`` in vLLM 0.32, or None when it can't run there."""
    if method == "bf16":
        return "none"
    record = method_record(method)
    capability = record.capability
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


def _preference(target: HardwareTarget, goal: Goal, model: ModelInfo) -> list[str]:
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


def _kv_dtype_bytes(kv_cache_dtype: str) -> int:
    return 1 if kv_cache_dtype.startswith("fp8") else 2


def _tp_options(target: HardwareTarget, model: ModelInfo) -> list[int]:
    if target.kind == "cpu":
        return [1]
    options = [tp for tp in (1, 2, 4, 8) if tp <= target.count and model.num_attention_heads % tp == 0]
    return options or [1]


@dataclass(frozen=True, slots=True)
class _Fit:
    plan: DevicePlan
    tensor_parallel_size: int
    kv_cache_dtype: str
    # When the box is too small: machines like it that would fit as pipeline stages.
    machines_needed: int | None = None
    cpu_space: CpuKvSpace | None = None


def _fit(
    model: ModelInfo,
    target: HardwareTarget,
    weights: WeightBytes,
    max_model_len: int,
    request: PlanRequest,
    kv_cache_dtype: str,
) -> _Fit:
    """Finds the smallest TP size on this box that fits; if none does, the largest, and how many boxes would."""
    kv_bytes = _kv_dtype_bytes(kv_cache_dtype)
    if target.kind == "cpu":
        return _fit_cpu(model, target, weights, max_model_len, request, kv_cache_dtype)
    batched = default_max_num_batched_tokens(target.memory_bytes, target.name, cpu=False)
    seqs = default_max_num_seqs(target.memory_bytes, target.name, cpu=False)
    util = request.gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION
    options = [request.tensor_parallel_size] if request.tensor_parallel_size else _tp_options(target, model)
    for tp in options:
        plan = plan_gpu(
            model, weights, target.memory_bytes, max_model_len, kv_bytes, tp, 1, batched, seqs, util
        )
        if plan.capacity.max_concurrency >= request.concurrency:
            return _Fit(plan, tp, kv_cache_dtype)
    # Several boxes of this GPU: pipeline stages across boxes, tensor parallel within each.
    for pp in (2, 3, 4, 6, 8):
        staged = plan_gpu(
            model, weights, target.memory_bytes, max_model_len, kv_bytes, tp, pp, batched, seqs, util
        )
        if staged.capacity.max_concurrency >= request.concurrency:
            return _Fit(plan, tp, kv_cache_dtype, machines_needed=pp)
    return _Fit(plan, tp, kv_cache_dtype)


def _fit_cpu(
    model: ModelInfo,
    target: HardwareTarget,
    weights: WeightBytes,
    max_model_len: int,
    request: PlanRequest,
    kv_cache_dtype: str,
) -> _Fit:
    """Sizes VLLM_CPU_KVCACHE_SPACE with the one CPU rule (or the size asked for) and plans with it."""
    kv_bytes = _kv_dtype_bytes(kv_cache_dtype)
    if request.cpu_kvcache_gib is not None:
        plan = plan_cpu(model, weights, target.memory_bytes, max_model_len, kv_bytes, request.cpu_kvcache_gib)
        return _Fit(plan, 1, kv_cache_dtype)
    # Capacity grows linearly with the KV space: one GiB's worth says what the request needs.
    per_gib = plan_cpu(model, weights, target.memory_bytes, max_model_len, kv_bytes, 1).capacity
    needed = math.ceil(request.concurrency * GIB / per_gib.max_concurrency) if per_gib.max_concurrency else 0
    available = request.available_ram_bytes
    if available is None:
        available = available_ram_bytes()
    space = cpu_kv_space(needed, available, weights.total)
    plan = plan_cpu(model, weights, target.memory_bytes, max_model_len, kv_bytes, space.gib)
    # Whole blocks and vLLM's null block can make the rounded size one GiB short.
    while not _enough(plan.capacity, request.concurrency) and space.gib < max(space.limit_gib, 1):
        space = replace(space, gib=space.gib + 1)
        plan = plan_cpu(model, weights, target.memory_bytes, max_model_len, kv_bytes, space.gib)
    return _Fit(plan, 1, kv_cache_dtype, cpu_space=space)


def _enough(capacity: KvCapacity, concurrency: int) -> bool:
    return capacity.fits_one_sequence and capacity.max_concurrency >= concurrency


def quantized_dir(model: ModelInfo, method: str) -> Path:
    """Where the checkpoint for ``method`` lands: `quant-tui quantize`'s own default for what it makes."""
    if method_record(method).producer == "data-free":
        return default_output_dir(model.path, method)
    return model.path.parent / f"{model.name}-{method.upper()}"


def _server_config(
    model: ModelInfo,
    target: HardwareTarget,
    model_dir: str,
    fit: _Fit,
    max_model_len: int,
    method: str,
    request: PlanRequest,
) -> ServerConfig:
    """The one server plan for a candidate: what recommend prints and serve, the app and bench run."""
    plan = fit.plan
    cpu = target.kind == "cpu"
    plugin = method_record(method).plugin
    prediction = Prediction(
        kv_cache_tokens=plan.capacity.tokens,
        max_concurrency=plan.capacity.max_concurrency,
        max_model_len=max_model_len,
        kv_cache_bytes=plan.kv_budget_bytes,
        weights_bytes=plan.weights_bytes,
        kv_bytes_per_token=plan.kv_bytes_per_token,
        backend="cpu" if cpu else "cuda",
        computed_kv_cache_tokens=plan.capacity.tokens,
        calibration_key=None if cpu else (target.name, VLLM_VERSION, model.architecture),
    )
    return ServerConfig(
        model=Path(model_dir),
        backend="cpu" if cpu else "cuda",
        max_model_len=max_model_len,
        kv_cache_dtype=fit.kv_cache_dtype,
        tensor_parallel_size=fit.tensor_parallel_size,
        gpu_memory_utilization=None if cpu else request.gpu_memory_utilization,
        quantization=plugin.lower() if plugin else None,
        cpu_kvcache_gib=plan.kv_budget_bytes // GIB if cpu else None,
        # The CPU backend gains nothing from graph capture and starts much faster without it.
        enforce_eager=cpu,
        prediction=prediction,
        method=method,
    )


def _calibrated(server: ServerConfig, request: PlanRequest) -> tuple[ServerConfig, str | None]:
    """Applies a calibration recorded for the same GPU, vLLM version and architecture, if any."""
    prediction = server.prediction
    if prediction is None or prediction.calibration_key is None:
        return server, None
    path = request.calibration_file
    calibration = load_calibration(CalibrationKey(*prediction.calibration_key), path)
    if calibration is None:
        return server, None
    sentence = calibration.sentence()
    calibrated = replace(
        prediction,
        kv_cache_tokens=int(prediction.kv_cache_tokens * calibration.kv_ratio),
        max_concurrency=prediction.max_concurrency * calibration.kv_ratio,
        kv_cache_bytes=int(prediction.kv_cache_bytes * calibration.kv_ratio),
        calibration=sentence,
    )
    return replace(server, prediction=calibrated), sentence


def _shown_path(path: Path) -> str:
    """The model's folder as a command shows it: ``./…`` inside the working folder, else absolute."""
    try:
        return "./" + str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _candidate(
    model: ModelInfo,
    target: HardwareTarget,
    method: str,
    execution: Execution,
    max_model_len: int,
    request: PlanRequest,
    rank_reason: str,
) -> Candidate:
    weights = weight_bytes(model, method)
    cc = capability_number(target)
    kv_choice = request.kv_cache_dtype or "auto"
    fit = _fit(model, target, weights, max_model_len, request, kv_choice)
    reasons = [rank_reason]
    warnings: list[str] = []
    fp8_kv_ok = cc is not None and cc >= 89
    if request.kv_cache_dtype is None and fp8_kv_ok:
        too_tight = fit.plan.capacity.max_concurrency < request.concurrency
        if too_tight or request.goal in ("memory", "throughput"):
            with_fp8 = _fit(model, target, weights, max_model_len, request, "fp8")
            if with_fp8.plan.capacity.max_concurrency > fit.plan.capacity.max_concurrency:
                reasons.append("an FP8 KV cache halves KV memory per token: more sequences fit")
                fit = with_fp8
    needs_quantization = method != "bf16" and (model.quantization is None)
    model_dir = str(model.path)
    if needs_quantization:
        model_dir = str(quantized_dir(model, method))
    server, calibration_note = _calibrated(
        _server_config(model, target, model_dir, fit, max_model_len, method, request), request
    )
    if fit.cpu_space is not None:
        reasons.append(fit.cpu_space.reason)
    if calibration_note:
        reasons.append(calibration_note)
    assert server.prediction is not None
    plan = fit.plan
    if plan.weights_bytes + plan.overhead.total > plan.usable_bytes:
        warnings.append(
            f"weights ({format_bytes(plan.weights_bytes, 'MiB')} per device) and runtime ({format_bytes(plan.overhead.total, 'MiB')}) "
            f"exceed the {format_bytes(plan.usable_bytes, 'MiB')} vLLM may use"
        )
    elif not plan.capacity.fits_one_sequence:
        warnings.append(
            f"the KV cache ({format_bytes(plan.kv_budget_bytes, 'MiB')}) cannot hold one {max_model_len}-token sequence: "
            "vLLM refuses to start; lower --max-model-len"
        )
    elif server.prediction.max_concurrency < request.concurrency:
        warnings.append(
            f"only {server.prediction.max_concurrency:.1f} sequences of {max_model_len} tokens fit, "
            f"not the {request.concurrency} asked for"
        )
    if fit.cpu_space is not None and fit.cpu_space.capped:
        warnings.append(
            f"the RAM available now allows {fit.cpu_space.limit_gib} GiB of KV cache, not the "
            f"{fit.cpu_space.wanted_gib} GiB the context × concurrency wants"
        )
    if fit.tensor_parallel_size > 1:
        reasons.append(f"needs {fit.tensor_parallel_size} GPUs (tensor parallel) to fit")
    if fit.machines_needed:
        warnings.append(
            f"{fit.machines_needed} machines of {target.count}× {target.name} would fit it: "
            f"--pipeline-parallel-size {fit.machines_needed} --tensor-parallel-size {fit.tensor_parallel_size} "
            "--distributed-executor-backend ray"
        )
    if method == "bf16" and cc is not None and cc < 80:
        warnings.append("no bfloat16 before Ampere: vLLM serves it as float16 (--dtype half)")
    record = method_record(method)
    if record.four_bit and model.params < 13e9:
        warnings.append(
            f"4-bit weights cost more quality on small models ({human_params(model.params)} < 13B); "
            "prefer 8-bit unless memory forces it"
        )
    if method == "fp8" and execution == "weight-only" and target.kind == "gpu":
        warnings.append(
            "this GPU has no FP8 tensor cores (compute capability < 8.9): the FP8 checkpoint runs as "
            "weight-only FP8 through Marlin, saving memory but not compute"
        )
    if method == "fp8" and target.kind == "cpu":
        warnings.append("vLLM's CPU build runs FP8 checkpoints through a slow fallback; INT8 W8A8 is faster")
    if record.plugin:
        warnings.append(
            f"vLLM {VLLM_VERSION} no longer ships {record.plugin} support: install its vLLM plugin first"
        )
    if method == "w4a16" and model.linear_params and model.hidden_size % 128:
        warnings.append("hidden size is not a multiple of 128: group-128 W4A16 cannot quantize every layer")
    if model.quantization is not None:
        reasons.append(
            f"the checkpoint is already quantized ({model.quantization.scheme}): serve it as it is"
        )
    elif needs_quantization:
        reasons.append(make_it_line(method, _shown_path(model.path)))
    speed = CPU_SPEED_NOTE[execution] if target.kind == "cpu" else SPEED_NOTE[execution]
    trade_off = f"{record.trade_off}; {speed}; weights {format_bytes(weights.total, 'MiB')}"
    fits = server.prediction.max_concurrency >= request.concurrency and plan.capacity.fits_one_sequence
    return Candidate(
        method=method,
        execution=execution,
        weights=weights,
        kv_cache_dtype=fit.kv_cache_dtype,
        kv_cache_bytes_per_token=fit.plan.kv_bytes_per_token,
        fits=fits,
        tensor_parallel_size=fit.tensor_parallel_size,
        machines_needed=fit.machines_needed,
        max_concurrency=round(server.prediction.max_concurrency, 2),
        kv_cache_tokens=server.prediction.kv_cache_tokens,
        plan=fit.plan,
        model_dir=model_dir,
        server=server,
        vllm_args=tuple(server.vllm_args()),
        env=tuple(server.environment().items()),
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        trade_off=trade_off,
        needs_quantization=needs_quantization,
    )


def _rank_reason(method: str, execution: Execution, target: HardwareTarget, goal: Goal, first: bool) -> str:
    where = "the CPU backend" if target.kind == "cpu" else target.name
    if method == "bf16":
        return "the unquantized baseline: best quality, most memory"
    if execution == "w8a8":
        base = f"runs as real {method.upper()} matmuls on {where}"
    else:
        base = f"runs weight-only on {where}"
    return base + (f"; the first choice for goal '{goal}'" if first else "")


def recommend(model: ModelInfo, target: HardwareTarget, request: PlanRequest | None = None) -> Recommendation:
    """Ranks the ways to serve ``model`` on ``target``, best first, the unquantized baseline included.

    Never lists a method the hardware can't run. Candidates that fit come before those that don't;
    within each, the flowchart's order for the hardware generation and goal decides.
    """
    request = request or PlanRequest()
    max_model_len = request.max_model_len or min(model.max_context, 32768)
    notes: list[str] = []
    if target.kind == "cpu":
        notes.append(
            "no NVIDIA GPU: planning for vLLM's CPU backend (vllm-cpu); the KV cache is sized by "
            "VLLM_CPU_KVCACHE_SPACE"
        )
    if request.max_model_len and request.max_model_len > model.max_context:
        notes.append(
            f"--max-model-len {request.max_model_len} exceeds the model's {model.max_context} positions; "
            "vLLM will refuse it without rope scaling"
        )
    if model.quantization is not None:
        existing = model.quantization
        notes.append(
            f"already quantized ({existing.method}: {existing.scheme}); quant-tui will not quantize it again"
        )
        methods = [existing.recommend_as] if existing.recommend_as else []
    else:
        methods = _preference(target, request.goal, model)
    if "bf16" not in methods and model.quantization is None:
        methods.append("bf16")
    candidates: list[Candidate] = []
    for method in methods:
        execution = execution_for(method, target)
        if execution is None:
            continue
        first = not candidates
        reason = _rank_reason(method, execution, target, request.goal, first)
        candidates.append(_candidate(model, target, method, execution, max_model_len, request, reason))
    if not candidates and model.quantization is not None:
        raise_unservable(model, target)
    # Stable sort: what fits first; within each group the flowchart's order stays.
    ranked = sorted(candidates, key=lambda c: not c.fits)
    return Recommendation(target, model, request, max_model_len, tuple(ranked), tuple(notes))


def raise_unservable(model: ModelInfo, target: HardwareTarget) -> None:
    """Explains that an existing checkpoint's format can't run on the target."""
    from engine.errors import ModelError

    assert model.quantization is not None
    raise ModelError(
        f"{model.name} is already quantized as {model.quantization.method} ({model.quantization.scheme}), "
        f"which vLLM 0.32 cannot run on {target.name}; start from the unquantized model"
    )


def as_is_candidate(recommendation: Recommendation) -> Candidate | None:
    """The candidate that serves the checkpoint as it is (its own format; bf16 when unquantized)."""
    return next((c for c in recommendation.candidates if not c.needs_quantization), None)


def plan_checkpoint(model_dir: Path, request: PlanRequest | None = None) -> Candidate:
    """Plans serving the checkpoint in ``model_dir`` as it is, on this machine.

    What ``quant-tui serve`` and the launcher start when given no plan: the same candidate
    ``recommend`` lists for that checkpoint's method.

    Raises:
        QuantTuiError: the model cannot be read, or its format cannot run here.
    """
    from engine.hardware.detect import detect_hardware, target_from_snapshot
    from engine.model.inspect_model import inspect_model

    model = inspect_model(model_dir)
    target = target_from_snapshot(detect_hardware())
    candidate = as_is_candidate(recommend(model, target, request))
    if candidate is None:
        raise_unservable(model, target)
        raise AssertionError("unreachable")
    return candidate
