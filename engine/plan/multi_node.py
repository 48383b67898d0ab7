"""A plan spanning several boxes: the Ray cluster steps vLLM's multi-node guide gives, and the expert-parallel hint.

vLLM's ``docs/serving/parallelism_scaling.md``: start a Ray cluster (head first, then each worker
joining it, each with its own ``VLLM_HOST_IP``), check it with ``ray status``, then run one
``vllm serve`` on the head with ``--tensor-parallel-size`` = GPUs per node,
``--pipeline-parallel-size`` = nodes and ``--distributed-executor-backend ray``.
"""

from __future__ import annotations

from dataclasses import dataclass

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
