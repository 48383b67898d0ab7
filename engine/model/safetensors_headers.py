"""The one safetensors tensor record and dtype table, and reading headers and tensor data with positioned reads."""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelError


@dataclass(frozen=True, slots=True)
class SafetensorsDtype:
    """What quant-tui knows of one safetensors dtype.

    Attributes:
        element_bytes: bytes per element (F4: 0.5, two values a byte).
        torch_name: the ``torch`` dtype its data is read as (F4: its packed bytes, ``uint8``).
    """

    element_bytes: float
    torch_name: str


# Every safetensors dtype quant-tui reads, copies and writes; the tables below are views of it.
DTYPES: dict[str, SafetensorsDtype] = {
    "F64": SafetensorsDtype(8, "float64"),
    "I64": SafetensorsDtype(8, "int64"),
    "F32": SafetensorsDtype(4, "float32"),
    "I32": SafetensorsDtype(4, "int32"),
    "F16": SafetensorsDtype(2, "float16"),
    "BF16": SafetensorsDtype(2, "bfloat16"),
    "I16": SafetensorsDtype(2, "int16"),
    "F8_E4M3": SafetensorsDtype(1, "float8_e4m3fn"),
    "F8_E5M2": SafetensorsDtype(1, "float8_e5m2"),
    "F8_E8M0": SafetensorsDtype(1, "float8_e8m0fnu"),
    "I8": SafetensorsDtype(1, "int8"),
    "U8": SafetensorsDtype(1, "uint8"),
    "BOOL": SafetensorsDtype(1, "bool"),
    "F4": SafetensorsDtype(0.5, "uint8"),
}
# Bytes per element of each safetensors dtype.
DTYPE_BYTES: dict[str, float] = {name: dtype.element_bytes for name, dtype in DTYPES.items()}
# The torch dtype (its name in ``torch``) each safetensors dtype is read as; names stay strings so
# that importing this module never imports torch.
TORCH_DTYPES: dict[str, str] = {name: dtype.torch_name for name, dtype in DTYPES.items()}
# Bytes per element of each torch dtype a config's ``torch_dtype`` may name (F4 is stored as
# packed uint8 bytes, not a dtype of its own).
TORCH_DTYPE_BYTES: dict[str, float] = {
    dtype.torch_name: dtype.element_bytes for name, dtype in DTYPES.items() if name != "F4"
}
# safetensors' own limit on a header's size: a larger length prefix is a damaged file.
_MAX_HEADER_BYTES = 100_000_000


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


@dataclass(frozen=True, slots=True)
class TensorLocation:
    """Where one tensor's data lies in its file: absolute byte offsets from the header, and its record."""

    header: TensorHeader
    start: int
    stop: int

    def row_span(self, row_start: int, row_stop: int) -> tuple[int, int]:
        """The absolute (offset, length) of rows ``row_start:row_stop`` along the first dimension."""
        rows = self.header.shape[0] if self.header.shape else 1
        row_bytes = (self.stop - self.start) // max(rows, 1)
        return self.start + row_start * row_bytes, (row_stop - row_start) * row_bytes


def weight_files(folder: Path) -> list[Path]:
    """The folder's ``*.safetensors`` files, in shard order."""
    return sorted(folder.glob("*.safetensors"))


def read_safetensors_headers(files: list[Path]) -> list[TensorHeader]:
    """Every tensor's name, dtype and shape, file by file (names sorted within a file), reading only headers.

    Raises:
        ModelError: a file cannot be read, its header is damaged, or it is shorter than its header says.
    """
    headers: list[TensorHeader] = []
    for path in files:
        locations = read_tensor_locations(path)
        headers.extend(locations[name].header for name in sorted(locations))
    return headers


def read_tensor_locations(path: Path) -> dict[str, TensorLocation]:
    """Each tensor's record and absolute data offsets in a safetensors file, in file order, reading only its header.

    Raises:
        ModelError: the file cannot be read or its header is damaged.
    """
    with open_tensors(path) as reader:
        return reader.locations


def _unreadable(path: Path, reason: str) -> ModelError:
    """The one error for a shard that is cut short, damaged, or changed while quant-tui reads it."""
    return ModelError(
        f"{path.name} is incomplete or damaged ({reason})",
        "wait until any download or copy into the model folder has finished (or download the file again), "
        "then run again",
    )


def _read_exactly(fd: int, path: Path, buffer: memoryview, offset: int) -> None:
    """Fills ``buffer`` from ``offset`` with positioned reads; a file that got shorter is a ModelError."""
    done = 0
    while done < len(buffer):
        try:
            count = os.preadv(fd, [buffer[done:]], offset + done)
        except OSError as error:
            raise _unreadable(path, error.strerror or type(error).__name__) from None
        if count == 0:
            raise _unreadable(path, f"expected {len(buffer)} bytes at offset {offset}, got {done}")
        done += count


def _parse_locations(fd: int, path: Path) -> dict[str, TensorLocation]:
    """Each tensor's record and data offsets, from the header at the start of the open file ``fd``.

    A dtype missing from :data:`DTYPES` is listed (its size unchecked): whoever uses the tensor says
    that quant-tui cannot handle it; reading its data is refused.
    """
    prefix = bytearray(8)
    _read_exactly(fd, path, memoryview(prefix), 0)
    (length,) = struct.unpack("<Q", prefix)
    if length > _MAX_HEADER_BYTES:
        raise _unreadable(path, f"its header claims {length} bytes")
    encoded = bytearray(length)
    _read_exactly(fd, path, memoryview(encoded), 8)
    try:
        header = json.loads(encoded)
        locations = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            record = TensorHeader(name, str(entry["dtype"]), tuple(int(dim) for dim in entry["shape"]))
            start, stop = (int(offset) for offset in entry["data_offsets"])
            locations[name] = TensorLocation(record, 8 + length + start, 8 + length + stop)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise _unreadable(path, "its header is not valid safetensors JSON") from None
    for location in locations.values():
        size = location.stop - location.start
        if size < 0 or (location.header.dtype in DTYPES and size != location.header.nbytes):
            raise _unreadable(path, f"its header's entry for {location.header.name} is inconsistent")
    return locations


class ShardReader:
    """Reads tensors of one open safetensors file with plain positioned reads, never a memory map.

    A memory-mapped file that is truncated while its pages are read ends the process with SIGBUS;
    a read of a shorter file just returns fewer bytes, which becomes a one-line ModelError. Each
    read lands straight in a fresh tensor's buffer (one copy from the page cache, as a mapped read
    makes), which is then viewed as the tensor's dtype and shape.
    """

    def __init__(self, path: Path, fd: int, locations: dict[str, TensorLocation]) -> None:
        """Wraps ``fd`` (owned by :func:`open_tensors`) with the offsets its header gave."""
        self.path = path
        self._fd = fd
        self.locations = locations

    def keys(self) -> list[str]:
        """The tensor names, in file order."""
        return list(self.locations)

    def get_tensor(self, name: str) -> Any:
        """The whole tensor ``name``."""
        location = self._location(name)
        return self._read(location, location.start, location.stop - location.start, location.header.shape)

    def read_rows(self, name: str, row_start: int, row_stop: int, read_ahead: int = 0) -> Any:
        """Rows ``row_start:row_stop`` (first dimension) of tensor ``name``; a scalar is its one row.

        Args:
            read_ahead: bytes after these rows (whatever tensors they hold) the kernel should start
                reading into the page cache now. A streaming reader opens the file afresh for each
                block, so the kernel's own readahead, kept per open file, never sees a sequential read.
        """
        location = self._location(name)
        shape = location.header.shape
        row_stop = min(row_stop, shape[0] if shape else 1)
        row_start = max(0, min(row_start, row_stop))
        offset, length = location.row_span(row_start, row_stop)
        rows_shape = (row_stop - row_start, *shape[1:]) if shape else ()
        rows = self._read(location, offset, length, rows_shape)
        if read_ahead > 0:
            os.posix_fadvise(self._fd, offset + length, read_ahead, os.POSIX_FADV_WILLNEED)
        return rows

    def _location(self, name: str) -> TensorLocation:
        try:
            return self.locations[name]
        except KeyError:
            raise _unreadable(self.path, f"it holds no tensor {name}") from None

    def _read(self, location: TensorLocation, offset: int, length: int, shape: tuple[int, ...]) -> Any:
        import torch

        dtype = location.header.dtype
        if dtype not in DTYPES:
            raise ModelError(
                f"tensor {location.header.name} in {self.path.name} has dtype {dtype}, which quant-tui cannot read",
                "convert the checkpoint to a 16-bit dtype first",
            )
        buffer = torch.empty(length, dtype=torch.uint8)
        _read_exactly(self._fd, self.path, buffer.numpy().data, offset)
        if dtype == "F4":
            return buffer.reshape(*shape[:-1], -1) if shape else buffer
        return buffer.view(getattr(torch, DTYPES[dtype].torch_name)).reshape(shape)


@contextlib.contextmanager
def open_tensors(path: Path) -> Iterator[ShardReader]:
    """Opens a safetensors file for reading data after its headers were read: a file changed since is a ModelError.

    A download or copy that replaces, truncates or rewrites a shard while quant-tui works makes
    the header it planned with stale; the error then says so in one line, and a shard truncated in
    place during a read is a short read (a ModelError), not the SIGBUS a memory map would get.

    Raises:
        ModelError: the file is gone, truncated, or no longer holds the tensor asked for.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as error:
        raise _unreadable(path, error.strerror or type(error).__name__) from None
    try:
        locations = _parse_locations(fd, path)
        size = os.fstat(fd).st_size
        end = max((location.stop for location in locations.values()), default=0)
        if end > size:
            raise _unreadable(path, f"its header lists data up to byte {end}, the file has {size}")
        # Only reads are turned into "incomplete or damaged" errors: whatever the caller's block raises passes through.
        yield ShardReader(path, fd, dict(sorted(locations.items(), key=lambda item: item[1].start)))
    finally:
        os.close(fd)
