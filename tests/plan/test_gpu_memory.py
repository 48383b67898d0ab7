"""The GPU memory model against per-GPU figures vLLM reported at real start-ups (published by llm-d).

Source: llm-d-incubation/llm-d-planner, ``accuracy/results/v0.19.0/accuracy_report.md`` (vLLM 0.19.0,
H100-80GB with 79.19 GiB physical, gpu_memory_utilization 0.95, max_model_len 8192, so the
serve defaults max_num_batched_tokens 8192 and max_num_seqs 1024). vLLM 0.19 did not yet subtract
the CUDA-graph estimate (default since 0.21), so these rows are compared without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.plan.gpu_memory import gpu_memory_breakdown
from engine.plan.memory import weight_bytes
from tests.plan.model_configs import model_from_config

GIB = 1024**3
H100_BYTES = int(79.19 * GIB)

# model, TP, weights GiB, activation GiB, non-torch GiB, KV GiB (None: not published for that row)
PUBLISHED = [
    ("llama-3.1-8b", 1, 14.99, 1.89, 0.25, 58.11),
    ("llama-3.1-8b", 2, 7.51, 1.89, 2.07, None),
    ("llama-3.1-8b", 4, 3.77, 1.89, 2.13, None),
    ("qwen2.5-7b", 1, 14.25, 2.21, 0.24, 58.53),
    ("qwen2.5-7b", 2, 7.12, 2.21, 2.06, None),
    ("qwen2.5-7b", 4, 3.55, 2.21, 2.13, None),
    ("qwen3-8b", 1, None, 2.21, None, None),
    ("phi-4", 1, None, 1.52, None, None),
    ("qwen3-30b-a3b", 1, None, 2.68, None, None),
]


@pytest.mark.parametrize(
    ("name", "tp", "weights", "activation", "non_torch", "kv"),
    PUBLISHED,
    ids=[f"{row[0]}-tp{row[1]}" for row in PUBLISHED],
)
def test_terms_match_published_startups(
    name: str,
    tp: int,
    weights: float | None,
    activation: float,
    non_torch: float | None,
    kv: float | None,
    tmp_path: Path,
) -> None:
    model = model_from_config(tmp_path, name)
    shard = weight_bytes(model, "bf16").total // tp
    memory = gpu_memory_breakdown(model, shard, H100_BYTES, 0.95, 8192, 1024, tp, enforce_eager=True)
    if weights is not None:
        assert memory.weights_bytes / GIB == pytest.approx(weights, rel=0.01)
    assert memory.activation_peak_bytes / GIB == pytest.approx(activation, rel=0.10)
    if non_torch is not None:
        assert memory.non_torch_bytes / GIB == pytest.approx(non_torch, rel=0.10)
    if kv is not None:
        assert memory.kv_cache_bytes / GIB == pytest.approx(kv, rel=0.01)
    assert memory.cudagraph_bytes == 0


def test_breakdown_adds_up_and_subtracts_cuda_graphs_by_default(tmp_path: Path) -> None:
    model = model_from_config(tmp_path, "llama-3.1-8b")
    eager = gpu_memory_breakdown(model, 16 * GIB, 80 * GIB, 0.9, 8192, 1024, enforce_eager=True)
    graphs = gpu_memory_breakdown(model, 16 * GIB, 80 * GIB, 0.9, 8192, 1024)
    assert eager.requested_bytes == 77_309_411_328  # ceil(80 GiB × 0.9)
    assert graphs.cudagraph_bytes > 0
    assert eager.kv_cache_bytes - graphs.kv_cache_bytes == graphs.cudagraph_bytes
    tiny = gpu_memory_breakdown(model, 100 * GIB, 80 * GIB, 0.9, 8192, 1024)
    assert tiny.kv_cache_bytes == 0


# The profile run's activation peak per activation --dtype, by hand (64 sampler rows, 4096 batched tokens):
# sampler rows × vocab × (lm_head logits in the dtype + the float32 cast, none when already float32, + 8 B
# of float32 copies) + tokens × hidden × 2.5 copies in the dtype + (MoE) tokens × top-k ×
# (max(2 × expert width, hidden) + width) in the dtype.
ACTIVATION_BY_DTYPE = [
    # Llama-3.1-8B (vocab 128,256, hidden 4096): 64 × 128,256 × 14 = 114,917,376; 4096 × 4096 × 5 = 83,886,080.
    ("llama-3.1-8b", 2, 198_803_456),
    # float32: 64 × 128,256 × 12 = 98,500,608; 4096 × 4096 × 10 = 167,772,160.
    ("llama-3.1-8b", 4, 266_272_768),
    # Qwen3-30B-A3B (vocab 151,936, hidden 2048, 8 of 128 experts of width 768): 64 × 151,936 × 14 =
    # 136,134,656; 4096 × 2048 × 5 = 41,943,040; 4096 × 8 × (max(1536, 2048) + 768) × 2 = 184,549,376.
    ("qwen3-30b-a3b", 2, 362_627_072),
    # float32: 64 × 151,936 × 12 = 116,686,848; 83,886,080; 4096 × 8 × 2816 × 4 = 369,098,752.
    ("qwen3-30b-a3b", 4, 569_671_680),
]


@pytest.mark.parametrize(("name", "dtype_bytes", "peak"), ACTIVATION_BY_DTYPE)
def test_activation_peak_follows_the_activation_dtype(
    name: str, dtype_bytes: int, peak: int, tmp_path: Path
) -> None:
    model = model_from_config(tmp_path, name)
    memory = gpu_memory_breakdown(model, 0, 80 * GIB, 0.9, 4096, 64, dtype_bytes=dtype_bytes)
    assert memory.activation_peak_bytes == peak
    # The KV cache gets what the activations do not take: 77,309,411,328 requested (ceil(80 GiB × 0.9))
    # − 268,435,456 non-torch (0.25 GiB) − 1,073,741,824 CUDA graphs − the peak.
    assert memory.kv_cache_bytes == 75_967_234_048 - peak
