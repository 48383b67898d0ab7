"""What the user asks a plan for (context, concurrency, vLLM's serving options, nodes), and the KV-cache dtypes vLLM takes where."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from engine.errors import QuantTuiError
from engine.plan.method_choice import Goal
from engine.plan.server_config import check_counts, check_memory_fraction

if TYPE_CHECKING:
    from engine.hardware.detect import HardwareTarget
    from engine.model.inspect_model import ModelInfo

# The --kv-cache-dtype values quant-tui plans for (vLLM 0.32's CacheDType has more, for other hardware).
KvCacheDtype = Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]
KV_CACHE_DTYPES: tuple[str, ...] = get_args(KvCacheDtype)
# vLLM 0.32's ModelDType: the --dtype values it takes ("auto" downcasts float32 checkpoints to 16-bit).
ServeDtype = Literal["auto", "half", "float16", "bfloat16", "float", "float32"]
SERVE_DTYPES: tuple[str, ...] = get_args(ServeDtype)


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a ``--dtype``: 4 for float32, else 2 (``auto`` never serves float32)."""
    return 4 if dtype in ("float", "float32") else 2


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """What the user wants to serve, and how.

    Attributes:
        max_model_len: context length per request (None: the model's own maximum, capped at 32k).
        concurrency: sequences that must fit at that context at once.
        kv_cache_dtype: one of ``KV_CACHE_DTYPES``; None lets the recommender choose per candidate.
        tensor_parallel_size: force a TP size; None picks the smallest that fits (with ``nodes``
            above 1: the GPUs of one box, as vLLM's multi-node guide sets it).
        cpu_kvcache_gib: force the CPU backend's KV space; None applies ``server_plan.cpu_kv_space``.
        available_ram_bytes: RAM available on the CPU host; None reads it now (psutil).
        gpu_memory_utilization: vLLM's ``--gpu-memory-utilization``; None is its default.
        calibration_file: GPU calibrations to apply; None reads the user's cache, and a path
            that does not exist applies none.
        max_num_seqs: vLLM's ``--max-num-seqs``; None is its per-hardware default.
        max_num_batched_tokens: vLLM's ``--max-num-batched-tokens`` (the profile run's batch, so the
            activation peak, and the tokens in flight for sliding windows); None is its default.
        nodes: boxes of the target's GPUs, joined by Ray: pipeline stages across boxes.
        pipeline_parallel_size: pipeline stages (``--pipeline-parallel-size``); None is one stage
            per box (``nodes``). Without ``nodes`` the stages share one box (vLLM's default
            multiprocessing executor, no Ray).
        dtype: vLLM's ``--dtype`` (one of ``SERVE_DTYPES``): the bytes of the unquantized weights,
            activations and an ``auto`` KV cache.
        layer_partition: decoder layers per pipeline stage (``VLLM_PP_LAYER_PARTITION``, which the
            planned server is given too); None is vLLM's own split. Checked against the model when planned.
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
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    nodes: int = 1
    dtype: str = "auto"
    pipeline_parallel_size: int | None = None
    layer_partition: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in SERVE_DTYPES:
            raise QuantTuiError(f"unknown --dtype {self.dtype!r}; use one of {', '.join(SERVE_DTYPES)}")
        if self.kv_cache_dtype is not None and self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise QuantTuiError(
                f"unknown KV cache dtype {self.kv_cache_dtype!r}; use one of {', '.join(KV_CACHE_DTYPES)}"
            )
        check_memory_fraction(self.gpu_memory_utilization)
        check_counts(**{name: getattr(self, name) for name in _COUNTS})

    @property
    def stages(self) -> int:
        """The pipeline stages planned: as asked, else one per box."""
        return self.pipeline_parallel_size or self.nodes


# The whole-number options that must be at least 1 (the CLI, serve and the Plan screen's dialog alike).
_COUNTS = (
    "max_model_len",
    "concurrency",
    "cpu_kvcache_gib",
    "max_num_seqs",
    "max_num_batched_tokens",
    "tensor_parallel_size",
    "nodes",
    "pipeline_parallel_size",
)


def kv_cache_dtype_warning(kv_cache_dtype: str, target: HardwareTarget, model: ModelInfo) -> str | None:
    """Checks ``--kv-cache-dtype`` against the attention backends vLLM 0.32 has for this target and model.

    From each backend's ``supported_kv_cache_dtypes``: CPU_ATTN takes auto/fp8/fp8_e4m3/fp8_e5m2
    (FP8 only with AVX-512 or AMX and head sizes of 32·n), the CPU MLA backends (CPU_MLA, AMX_MLA) auto only; on CUDA, FlashAttention takes fp8/fp8_e4m3,
    FlashInfer and Triton also fp8_e5m2, and every MLA backend (FlashMLA, Triton MLA, CUTLASS MLA,
    FlashInfer MLA) fp8/fp8_e4m3 only.

    Returns:
        A warning sentence for a choice that runs with a caveat, else None.

    Raises:
        QuantTuiError: no vLLM attention backend for this target and model takes that dtype.
    """
    if kv_cache_dtype == "auto":
        return None
    mla = model.attention is not None and model.attention.mla
    if target.kind == "cpu":
        if mla:
            raise QuantTuiError(
                f"vLLM's CPU MLA attention (CPU_MLA, AMX_MLA) keeps the KV cache in the model's dtype, "
                f"so {model.name} cannot use --kv-cache-dtype {kv_cache_dtype} on the CPU backend",
                "drop --kv-cache-dtype (auto)",
            )
        # CPU_ATTN's _get_attn_isa: an FP8 KV cache needs AVX-512 or AMX, and head sizes of 32·n.
        if not {"avx512f", "amx_tile"} & target.cpu_flags:
            raise QuantTuiError(
                "vLLM's CPU attention keeps an FP8 KV cache only on x86 with AVX-512 or AMX, and this CPU has neither",
                "drop --kv-cache-dtype (auto)",
            )
        head_size = model.attention.head_size if model.attention is not None else model.head_dim
        if head_size % 32:
            raise QuantTuiError(
                f"vLLM's CPU attention keeps an FP8 KV cache only for head sizes divisible by 32, "
                f"and {model.name}'s is {head_size}",
                "drop --kv-cache-dtype (auto)",
            )
        return None
    if mla and kv_cache_dtype == "fp8_e5m2":
        raise QuantTuiError(
            f"vLLM's MLA attention backends take an FP8 E4M3 KV cache only, so {model.name} cannot use fp8_e5m2",
            "use --kv-cache-dtype fp8",
        )
    cc = target.compute_capability
    if cc is not None and cc < (8, 9):
        return (
            f"{target.name} has no FP8 tensor cores (compute < 8.9): the FP8 KV cache halves KV memory, "
            "and attention dequantizes it to 16-bit"
        )
    if kv_cache_dtype == "fp8_e5m2":
        return "FlashAttention takes FP8 E4M3 only: for fp8_e5m2 vLLM picks FlashInfer or Triton attention"
    return None
