"""The AMX permission plugin: registered where vLLM looks for it, and harmless to call anywhere."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from engine.serve.amx_permission import ENTRY_POINT_NAME, request_amx_tile_permission


def test_plugin_is_registered_in_vllms_general_plugins_group() -> None:
    """vLLM loads ``vllm.general_plugins`` in every process; ours must be there and load to the function."""
    entry = {e.name: e for e in metadata.entry_points(group="vllm.general_plugins")}[ENTRY_POINT_NAME]
    assert entry.load() is request_amx_tile_permission


def test_permission_follows_the_cpu() -> None:
    """Granted exactly where the CPU has AMX tiles (Linux grants it to any process that asks), twice over."""
    import torch

    has_amx = bool(torch.cpu._is_amx_tile_supported())
    assert request_amx_tile_permission() is has_amx
    assert request_amx_tile_permission() is has_amx


def test_loads_in_a_fresh_process_the_way_vllm_loads_it() -> None:
    """The same call vLLM's ``load_general_plugins`` makes, in a fresh interpreter, succeeds."""
    code = (
        "from vllm.plugins import load_plugins_by_group\n"
        f"plugins = load_plugins_by_group('vllm.general_plugins')\n"
        f"print(plugins[{ENTRY_POINT_NAME!r}]() in (True, False))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "True"
