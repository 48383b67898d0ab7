"""The one server plan of a planned candidate: its ServerConfig with the prediction, calibrated from earlier runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from engine.hardware.detect import HardwareTarget
from engine.model.gguf_file import tokenizer_folder
from engine.model.inspect_model import ModelInfo
from engine.plan.fitting import DeviceFit
from engine.plan.methods import method as method_record
from engine.plan.plan_request import PlanRequest
from engine.plan.server_config import Prediction, ServerConfig
from engine.plan.server_plan import CalibrationKey, load_calibration
from engine.plan.vllm_facts import GIB, VLLM_VERSION


def candidate_server_config(
    model: ModelInfo,
    target: HardwareTarget,
    model_dir: str,
    fit: DeviceFit,
    max_model_len: int,
    method: str,
    request: PlanRequest,
) -> ServerConfig:
    """The one server plan for a candidate: what recommend prints and serve, the app and bench run."""
    plan = fit.plan
    cpu = target.kind == "cpu"
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
    gguf_file = model.gguf_file if method == "gguf" else None
    return ServerConfig(
        model=gguf_file or Path(model_dir),
        tokenizer=tokenizer_folder(model.path) if gguf_file else None,
        backend="cpu" if cpu else "cuda",
        max_model_len=max_model_len,
        dtype=request.dtype,
        kv_cache_dtype=fit.kv_cache_dtype,
        tensor_parallel_size=fit.tensor_parallel_size,
        pipeline_parallel_size=fit.pipeline_parallel_size,
        # Ray only to span boxes; stages on one box run on vLLM's default multiprocessing executor.
        distributed_executor_backend="ray" if request.nodes > 1 else None,
        gpu_memory_utilization=None if cpu else request.gpu_memory_utilization,
        max_num_seqs=request.max_num_seqs,
        max_num_batched_tokens=request.max_num_batched_tokens,
        quantization=(method_record(method).plugin or "").lower() or None,
        cpu_kvcache_gib=plan.kv_budget_bytes // GIB if cpu else None,
        # The CPU backend gains nothing from graph capture and starts much faster without it.
        enforce_eager=cpu,
        trust_remote_code=model.remote_config is not None,
        prediction=prediction,
        method=method,
        layer_partition=request.layer_partition,
    )


def apply_calibration(server: ServerConfig, request: PlanRequest) -> tuple[ServerConfig, str | None]:
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
