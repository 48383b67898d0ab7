"""A plan spanning several boxes: the Ray cluster steps vLLM's multi-node guide gives, whether a cluster is reachable, the expert-parallel hint.

vLLM's ``docs/serving/parallelism_scaling.md``: start a Ray cluster (head first, then each worker
joining it, each with its own ``VLLM_HOST_IP``), check it with ``ray status``, then run one
``vllm serve`` on the head with ``--tensor-parallel-size`` = GPUs per node,
``--pipeline-parallel-size`` = nodes and ``--distributed-executor-backend ray``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.errors import QuantTuiError
from engine.model.inspect_model import ModelInfo

RAY_PORT = 6379  # Ray's default GCS port, the one vLLM's run_cluster.sh uses


@dataclass(frozen=True, slots=True)
class ClusterStep:
    """One command of the multi-node start-up, and where to run it."""

    where: str
    command: str


def ray_cluster_steps(nodes: int, serve_command: str, port: int = RAY_PORT) -> tuple[ClusterStep, ...]:
    """The commands that start a ``nodes``-box Ray cluster and the vLLM server on it, in order.

    ``serve_command`` is the plan's own ``vllm serve …`` line (it carries the parallel sizes and
    ``--distributed-executor-backend ray``).
    """
    steps = [ClusterStep("head node", f"VLLM_HOST_IP=<HEAD_NODE_IP> ray start --head --port={port}")]
    for worker in range(1, nodes):
        steps.append(
            ClusterStep(
                f"worker node {worker}",
                f"VLLM_HOST_IP=<WORKER_{worker}_IP> ray start --address=<HEAD_NODE_IP>:{port}",
            )
        )
    steps.append(ClusterStep("head node", f"ray status  # expect {nodes} nodes"))
    steps.append(ClusterStep("head node", serve_command))
    return tuple(steps)


def ray_temp_dir(environ: Mapping[str, str]) -> Path:
    """Ray's temporary folder, where ``ray start`` records the cluster this box belongs to.

    Ray's ``get_user_temp_dir``: ``$RAY_TMPDIR``, else ``$TMPDIR`` (Linux), else ``/tmp``; then ``ray``.
    """
    return Path(environ.get("RAY_TMPDIR") or environ.get("TMPDIR") or "/tmp") / "ray"


def ray_cluster_problem(
    environ: Mapping[str, str] | None = None, ray_installed: bool | None = None
) -> str | None:
    """Why vLLM started on this box would not join a Ray cluster, or None when it would.

    vLLM's Ray executor calls ``ray.init()`` with no address, which joins ``$RAY_ADDRESS`` when set,
    else the cluster ``ray start`` last started or joined on this box (its address is in Ray's
    ``ray_current_cluster`` file, which ``ray stop`` removes), else starts a new Ray instance of
    this box alone, which would lack the other boxes' GPUs. Whether the cluster holds enough GPUs
    is vLLM's own check at start-up (its placement group).

    Args:
        environ: the environment vLLM gets (default: this process's).
        ray_installed: whether ``ray`` imports in this Python (default: looked up).
    """
    environ = os.environ if environ is None else environ
    if ray_installed is None:
        import importlib.util

        ray_installed = importlib.util.find_spec("ray") is not None
    if not ray_installed:
        return "Ray is not installed in quant-tui's Python, which vLLM's Ray executor needs (pip install ray)"
    if environ.get("RAY_ADDRESS"):
        return None
    if (ray_temp_dir(environ) / "ray_current_cluster").is_file():
        return None
    return "no Ray cluster is reachable from here ($RAY_ADDRESS is unset and `ray start` has not run on this box)"


def require_ray_cluster(boxes: int, fix: str, environ: Mapping[str, str] | None = None) -> None:
    """Lets a plan spanning ``boxes`` boxes start here only where vLLM would join a Ray cluster.

    Raises:
        QuantTuiError: :func:`ray_cluster_problem` found one; ``fix`` says where the Ray steps are.
    """
    problem = ray_cluster_problem(environ)
    if problem is not None:
        raise QuantTuiError(f"this plan spans {boxes} boxes joined by Ray and {problem}", fix)


def expert_parallel_hint(model: ModelInfo, gpus: int) -> str | None:
    """Suggests ``--enable-expert-parallel`` for an MoE model split over several GPUs, else None.

    vLLM's FusedMoE uses expert parallelism when it is enabled and the model is split
    (TP × DP > 1): each GPU then holds whole experts (EP size = those GPUs) instead of a slice of
    every expert. The hint asks for the experts to divide evenly over the GPUs.
    """
    moe = model.moe
    if moe is None or gpus < 2 or moe.num_experts % gpus:
        return None
    per_gpu = moe.num_experts // gpus
    return (
        f"MoE with {moe.num_experts} experts: `--enable-expert-parallel` gives each of the {gpus} GPUs "
        f"{per_gpu} whole expert{'s' if per_gpu > 1 else ''} instead of a 1/{gpus} slice of every expert "
        "(compare both with quant-tui bench)"
    )
