"""Server-plan rules shared by planner and launcher: the CPU KV cache space, and GPU calibration from earlier runs."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.plan.vllm_facts import GIB
from engine.units import format_bytes

# KV space on the CPU backend: what the requested context × concurrency needs, times this headroom,
# rounded up to whole GiB (VLLM_CPU_KVCACHE_SPACE takes whole GiB), at least 1 GiB.
CPU_KV_HEADROOM = 1.25
# RAM left for everything else besides the weights and the KV cache: the API server and engine
# processes with torch loaded, and the rest of a shared box.
CPU_RAM_MARGIN_BYTES = 2 * GIB


@dataclass(frozen=True, slots=True)
class CpuKvSpace:
    """The ``VLLM_CPU_KVCACHE_SPACE`` a plan sets, and why.

    Attributes:
        gib: the whole GiB to set.
        wanted_gib: what the context × concurrency needs with headroom.
        limit_gib: the most the available RAM allows after the weights and a margin.
        reason: one sentence for the plan's reasons.
        capped: the RAM limit made it smaller than wanted.
    """

    gib: int
    wanted_gib: int
    limit_gib: int
    reason: str
    capped: bool


def cpu_kv_space(needed_bytes: int, available_bytes: int, weights_bytes: int) -> CpuKvSpace:
    """The one rule for the CPU KV cache space, used by the planner and the launcher.

    Enough for the requested context × concurrency (``needed_bytes``) with 25 % headroom, rounded
    up to whole GiB and at least 1 GiB; never more than the RAM available now minus the weights
    and a 2 GiB margin (but 1 GiB even when that is less: vLLM then says it does not fit).
    """
    wanted = max(1, math.ceil(needed_bytes * CPU_KV_HEADROOM / GIB))
    limit = max(0, (available_bytes - weights_bytes - CPU_RAM_MARGIN_BYTES) // GIB)
    gib = max(1, min(wanted, limit))
    capped = gib < wanted
    need = format_bytes(needed_bytes, "MiB", digits=2)
    reason = (
        f"VLLM_CPU_KVCACHE_SPACE={gib}: the context × concurrency needs {need} of KV cache, "
        f"+25 % headroom rounded up to whole GiB is {wanted} GiB"
    )
    if capped:
        reason += f", capped at the {limit} GiB of RAM available after the weights and a 2 GiB margin"
    else:
        reason += f" (RAM available after the weights and a 2 GiB margin: {limit} GiB)"
    return CpuKvSpace(gib, wanted, limit, reason, capped)


def available_ram_bytes() -> int:
    """RAM available to a new process now (psutil's estimate, which counts reclaimable cache)."""
    import psutil

    return int(psutil.virtual_memory().available)


# --- GPU calibration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CalibrationKey:
    """What a calibration applies to: the same GPU model, vLLM version and model architecture."""

    gpu: str
    vllm_version: str
    architecture: str

    def text(self) -> str:
        """The key as stored in the JSON file."""
        return f"{self.gpu}|{self.vllm_version}|{self.architecture}"


@dataclass(frozen=True, slots=True)
class Calibration:
    """A measured correction of the plan's KV cache size.

    Attributes:
        kv_ratio: vLLM's reported KV cache tokens divided by the plan's.
        predicted_tokens: the plan's figure on the run it comes from.
        actual_tokens: vLLM's figure on that run.
    """

    key: CalibrationKey
    kv_ratio: float
    predicted_tokens: int
    actual_tokens: int

    def sentence(self) -> str:
        """How a plan says it applied this."""
        return (
            f"calibrated from a run on {self.key.gpu}, vLLM {self.key.vllm_version}: "
            f"KV cache ×{self.kv_ratio:.3f} of the computed size"
        )


def calibration_path() -> Path:
    """The calibration file in quant-tui's cache folder."""
    from engine.paths import cache_dir

    return cache_dir() / "gpu-calibration.json"


def _read(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_calibration(key: CalibrationKey, path: Path | None = None) -> Calibration | None:
    """The calibration recorded for ``key``, or None (also for an unreadable file)."""
    entry = _read(path or calibration_path()).get(key.text())
    if not isinstance(entry, dict):
        return None
    try:
        ratio = float(entry["kv_ratio"])  # type: ignore[arg-type]
        predicted = int(entry["predicted_tokens"])  # type: ignore[call-overload]
        actual = int(entry["actual_tokens"])  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError):
        return None
    if not 0.1 < ratio < 10:
        return None
    return Calibration(key, ratio, predicted, actual)


def record_calibration(
    key: CalibrationKey, predicted_tokens: int, actual_tokens: int, path: Path | None = None
) -> Calibration | None:
    """Stores vLLM's figure against the uncalibrated plan's; None when there is nothing to record.

    The file is replaced atomically (written next to it, then renamed).
    """
    if predicted_tokens <= 0 or actual_tokens <= 0:
        return None
    calibration = Calibration(key, actual_tokens / predicted_tokens, predicted_tokens, actual_tokens)
    path = path or calibration_path()
    data = _read(path)
    entry = asdict(calibration)
    entry.pop("key")
    data[key.text()] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    partial.replace(path)
    return calibration
