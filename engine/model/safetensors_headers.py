"""The one safetensors tensor record and dtype-size table, and reading a checkpoint's headers without its data."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelError

# Bytes per element of each safetensors dtype (F4: two values per byte).
DTYPE_BYTES: dict[str, float] = {
    "F64": 8,
    "I64": 8,
    "F32": 4,
    "I32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F4": 0.5,
}


@dataclass(frozen=True, slots=True)
class TensorHeader:
    """One tensor's name, safetensors dtype and shape: what a header lists and what a writer lays out."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        """How many elements the tensor has."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """How many bytes the tensor's data takes (an unknown dtype counts as 2 bytes)."""
        return math.ceil(self.numel * DTYPE_BYTES.get(self.dtype, 2))


def weight_files(folder: Path) -> list[Path]:
    """The folder's ``*.safetensors`` files, in shard order."""
    return sorted(folder.glob("*.safetensors"))


def read_safetensors_headers(files: list[Path]) -> list[TensorHeader]:
    """Reads every tensor's name, dtype and shape without reading tensor data."""
    from safetensors import SafetensorError, safe_open

    headers: list[TensorHeader] = []
    for path in files:
        try:
            with safe_open(str(path), framework="numpy") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                    tensor = handle.get_slice(name)
                    headers.append(TensorHeader(name, str(tensor.get_dtype()), tuple(tensor.get_shape())))
        except (SafetensorError, OSError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ModelError(
                f"{path.name} is not a readable safetensors file ({reason}); re-download or re-export it"
            ) from None
    return headers


@contextlib.contextmanager
def open_tensors(path: Path) -> Iterator[Any]:
    """``safe_open`` (PyTorch) for reading data after the headers were read: a file changed since is a ModelError.

    A download or copy that replaces or rewrites a shard while quant-tui works makes the header it
    planned with stale; the error then says so in one line instead of a safetensors traceback.

    Raises:
        ModelError: the file is gone, truncated, or no longer holds the tensor asked for.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            yield handle
    except (SafetensorError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(
            f"{path.name} changed while quant-tui was reading it ({reason}); "
            "wait until the download or copy into the model folder has finished, then run again"
        ) from None
