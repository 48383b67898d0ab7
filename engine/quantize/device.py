"""The compute device a data-free run quantizes on: the CPU, or a CUDA GPU where torch sees one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import QuantTuiError
from engine.quantize import work_split

if TYPE_CHECKING:
    import torch

# --device values: auto is cuda when torch sees a CUDA GPU, else cpu.
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ComputeDevice:
    """Where a data-free run's arithmetic happens; the source is read and the output written on the host.

    Attributes:
        type: torch's device type, "cpu" or "cuda".
        block_elements: elements quantized at once. On the CPU a small block keeps temporaries in
            the allocator's reuse; on a GPU a whole work item is one launch of each kernel (a
            small block would cost more in launches than in arithmetic). Any split gives the same
            bits (rows, and block-scale row blocks, are quantized independently).
        name: what the user is told, e.g. ``cuda:0 (NVIDIA H100 80GB HBM3)``.
    """

    type: str
    block_elements: int
    name: str

    @property
    def is_accelerator(self) -> bool:
        """Whether the arithmetic runs off the host (tensors travel to it and back)."""
        return self.type != "cpu"

    def upload(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on this device (itself when already there)."""
        return tensor.to(self.type)

    def download(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on the host, for writing (itself when already there)."""
        return tensor.to("cpu")


def cpu_device() -> ComputeDevice:
    """The host CPU, quantizing in small blocks."""
    return ComputeDevice(type="cpu", block_elements=work_split.BLOCK_ELEMENTS, name="cpu")


def resolve_device(choice: str) -> ComputeDevice:
    """The device ``--device choice`` names: cpu, cuda, or auto (cuda when torch sees a CUDA GPU).

    Raises:
        QuantTuiError: an unknown choice, or cuda where torch sees no CUDA GPU (one line, what to do).
    """
    if choice not in DEVICE_CHOICES:
        raise QuantTuiError(f"unknown device {choice!r}; use one of {', '.join(DEVICE_CHOICES)}")
    if choice == "cpu":
        return cpu_device()
    import torch

    if not torch.cuda.is_available():
        if choice == "auto":
            return cpu_device()
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise QuantTuiError(
            f"--device cuda: torch {torch.__version__} ({build}) sees no CUDA GPU",
            "use --device cpu (or auto), or run on a machine with an NVIDIA GPU and a CUDA build of torch",
        )
    index = torch.cuda.current_device()
    return ComputeDevice(
        type="cuda",
        block_elements=work_split.CHUNK_ELEMENTS,
        name=f"cuda:{index} ({torch.cuda.get_device_name(index)})",
    )


def check_device_for_method(choice: str, calibrated: bool) -> None:
    """Refuses an explicit device for a calibrated method, whose device llm-compressor chooses itself.

    Raises:
        QuantTuiError: ``choice`` is not auto and the method is calibrated.
    """
    if calibrated and choice != "auto":
        raise QuantTuiError(
            f"--device {choice} sets where the data-free methods compute; llm-compressor places a calibrated "
            "run itself (on a GPU when torch sees one)",
            "drop --device",
        )


class GpuPeak:
    """torch's peak allocation on a device while the ``with`` block runs, in ``bytes`` after it (0 on the CPU)."""

    def __init__(self, device: ComputeDevice) -> None:
        self._device = device
        self._before = 0
        self.bytes = 0

    def __enter__(self) -> GpuPeak:
        if self._device.is_accelerator:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._before = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._device.is_accelerator:
            import torch

            torch.cuda.synchronize()
            self.bytes = max(0, torch.cuda.max_memory_allocated() - self._before)
