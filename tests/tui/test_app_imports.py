"""The app's first frame must not wait for torch, transformers or vLLM: importing the app never loads them."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "vllm", "safetensors.torch")


@pytest.mark.parametrize("module", ["tui.app", "tui.cli"])
def test_importing_the_app_does_not_load_heavy_libraries(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "from tui.app import create_app\n"
        "app = create_app()\n"
        f"print(','.join(name for name in {HEAVY!r} if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
