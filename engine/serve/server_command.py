"""The vLLM server's argument list and added environment for a :class:`ServerConfig` on a backend."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import QuantTuiError
from engine.plan.server_config import Backend, ServerConfig
from engine.serve.amx_permission import ENTRY_POINT_NAME as AMX_PLUGIN
from engine.serve.cpu_isa_emulation import ENTRY_POINT_NAME as CPU_ISA_PLUGIN
from engine.serve.cpu_isa_emulation import PLATFORM_ENTRY_POINT_NAME as CPU_ISA_EARLY_PLUGIN
from engine.serve.ports import pick_free_port

if TYPE_CHECKING:
    from engine.plan.plan_request import PlanRequest

__all__ = ["VLLM_API_KEY_ENV", "build_command", "default_cpu_kvcache_gib", "port_of"]

# The variable vLLM's server reads its key from (never argv, where `ps` shows it to every user).
VLLM_API_KEY_ENV = "VLLM_API_KEY"

# quant-tui's own vLLM plugins (pyproject's entry points), kept when a user's VLLM_PLUGINS allow-list is set.
QUANT_TUI_PLUGINS = (AMX_PLUGIN, CPU_ISA_PLUGIN, CPU_ISA_EARLY_PLUGIN)


def default_cpu_kvcache_gib(config: ServerConfig) -> int:
    """KV cache space on the CPU backend for a config that names none: the planner's one rule.

    Plans serving ``config.model`` as it is at ``config.max_model_len`` (and its dtypes and
    scheduler limits, :func:`plan_request_for`) for one request
    (``engine.plan.server_plan.cpu_kv_space``: what it needs +25 %, within the available RAM);
    1 GiB when the folder holds no model to plan from.
    """
    from engine.plan.recommender import plan_checkpoint
    from engine.plan.server_plan import available_ram_bytes, cpu_kv_space

    try:
        candidate = plan_checkpoint(config.model, plan_request_for(config))
    except (QuantTuiError, OSError, ValueError):
        # Nothing to plan from (no readable config.json): the rule's minimum; vLLM says if it is short.
        return cpu_kv_space(0, available_ram_bytes(), 0).gib
    return int(candidate.server.cpu_kvcache_gib or 1)


def plan_request_for(config: ServerConfig) -> PlanRequest:
    """The plan request a config without a plan stands for: its context, dtypes, scheduler limits and
    pipeline stages with their layer partition, one request.

    The stages come with the partition because the planner checks a partition against them, as
    vLLM's ``get_pp_indices`` does (one stage included); the CPU backend plans one stage only.
    """
    from engine.plan.plan_request import KV_CACHE_DTYPES, SERVE_DTYPES, PlanRequest

    return PlanRequest(
        max_model_len=config.max_model_len,
        dtype=config.dtype if config.dtype in SERVE_DTYPES else "auto",
        kv_cache_dtype=config.kv_cache_dtype if config.kv_cache_dtype in KV_CACHE_DTYPES else None,
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
        pipeline_parallel_size=config.pipeline_parallel_size if config.pipeline_parallel_size > 1 else None,
        layer_partition=config.layer_partition,
    )


def _vllm_cli() -> list[str]:
    """The ``vllm`` console script of this interpreter's environment, else one on PATH."""
    beside = Path(sys.executable).with_name("vllm")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("vllm")
    if found:
        return [found]
    return [sys.executable, "-m", "vllm.entrypoints.cli.main"]


def build_command(config: ServerConfig, backend: Backend) -> tuple[list[str], dict[str, str]]:
    """The server's argument list and the environment variables to add.

    ``vllm serve`` on the GPU build; the CPU build runs the OpenAI API server module directly
    (its ``vllm serve`` entry point fails). A ``None`` port is replaced by a free one.

    Args:
        config: what to serve and how.
        backend: ``"cuda"`` or ``"cpu"`` (see :func:`engine.serve.backend.detect_backend`).

    Returns:
        ``(argv, env)``: never a shell string; ``env`` holds only the additions.

    Raises:
        QuantTuiError: an unknown backend.
    """
    if backend not in ("cuda", "cpu"):
        raise QuantTuiError(f"unknown backend {backend!r}; use cuda or cpu")
    port = config.port if config.port is not None else pick_free_port(config.connect_host)
    if backend == "cpu" and config.cpu_kvcache_gib is None:
        config = replace(config, cpu_kvcache_gib=default_cpu_kvcache_gib(config))
    if backend == "cpu":
        program: tuple[str, ...] = (sys.executable, "-m", "vllm.entrypoints.openai.api_server")
    else:
        program = (*_vllm_cli(), "serve")
    argv = config.vllm_args(backend, port, program)

    # Local folders only: never let the server reach out to the Hub or phone home.
    env = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
    if config.api_key:
        env[VLLM_API_KEY_ENV] = config.api_key  # not on argv, where `ps` shows it to every user
    allowed_plugins = os.environ.get("VLLM_PLUGINS")
    if allowed_plugins is not None:
        # A user's plugin allow-list would otherwise drop ours: the AMX permission (see amx_permission)
        # and the AVX2 emulation, whose checks stop a server that runs without them (cpu_isa_emulation).
        allowed = allowed_plugins.split(",")
        missing = [name for name in QUANT_TUI_PLUGINS if name not in allowed]
        if missing:
            env["VLLM_PLUGINS"] = ",".join(filter(None, [allowed_plugins, *missing]))
    env.update(config.environment(backend))
    return argv, env


def port_of(argv: list[str]) -> int:
    """The ``--port`` a server command line binds."""
    return int(argv[argv.index("--port") + 1])
