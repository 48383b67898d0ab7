"""The launcher sizes a plan-less config's CPU KV space from the same request the config stands for."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.plan.plan_request import PlanRequest
from engine.plan.server_config import ServerConfig
from engine.serve.server_command import plan_request_for


@pytest.mark.parametrize(
    ("config", "request_"),
    [
        (ServerConfig(model=Path("m")), PlanRequest(kv_cache_dtype="auto")),
        (
            ServerConfig(model=Path("m"), max_model_len=512, dtype="float32", max_num_seqs=8),
            PlanRequest(max_model_len=512, dtype="float32", kv_cache_dtype="auto", max_num_seqs=8),
        ),
        (
            ServerConfig(model=Path("m"), kv_cache_dtype="fp8", max_num_batched_tokens=1024),
            PlanRequest(kv_cache_dtype="fp8", max_num_batched_tokens=1024),
        ),
        # Values only vLLM knows (passed through) plan as its defaults instead of failing.
        (ServerConfig(model=Path("m"), dtype="float64", kv_cache_dtype="int8"), PlanRequest()),
    ],
)
def test_a_config_plans_as_the_request_it_stands_for(config: ServerConfig, request_: PlanRequest) -> None:
    assert plan_request_for(config) == request_
