"""The engine is a library: importing any engine module must not import Textual (or torch/vllm)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import engine

ENGINE_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(engine.__path__, prefix="engine.")
    if not info.name.rsplit(".", 1)[-1].startswith("_")
)
# Modules whose whole point is to drive torch in a subprocess may import it; nothing imports Textual.
HEAVY_ALLOWED = {"engine.model.demo_training"}


def test_found_the_engine_modules() -> None:
    assert "engine.plan.recommender" in ENGINE_MODULES
    assert len(ENGINE_MODULES) >= 8
    root = Path(engine.__file__).parent
    on_disk = {
        ".".join(("engine", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        for path in root.rglob("*.py")
        if not path.stem.startswith("_") or path.stem == "__init__"
    }
    assert set(ENGINE_MODULES) == on_disk - {"engine"}


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_engine_module_imports_no_textual(module: str) -> None:
    code = (
        "import sys, importlib; importlib.import_module(sys.argv[1]); "
        "print(','.join(m for m in ('textual', 'torch', 'vllm', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, check=True)
    loaded = set(filter(None, result.stdout.strip().split(",")))
    assert "textual" not in loaded
    if module.split(".")[:2] != ["engine", "quantize"] and module not in HEAVY_ALLOWED:
        assert not loaded, f"{module} imports {loaded} at import time; import them inside functions"
