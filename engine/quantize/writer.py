"""A streaming safetensors writer: lays a shard out first, writes its header, then fills tensors in any order."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.model.safetensors_headers import DTYPE_BYTES, TensorHeader

HEADER_ALIGNMENT = 8


@dataclass(frozen=True)
class ShardLayout:
    """Where every tensor of one output file goes.

    Attributes:
        filename: the shard's file name, e.g. ``model-00001-of-00002.safetensors``.
        header: the encoded header (length prefix included) written at the start of the file.
        offsets: each tensor's absolute byte offset in the file.
        specs: the tensors, by name.
        size: the file's final size in bytes.
    """

    filename: str
    header: bytes
    offsets: dict[str, int]
    specs: dict[str, TensorHeader]
    size: int


def layout_shard(filename: str, specs: Iterable[TensorHeader]) -> ShardLayout:
    """Lays out a safetensors file so every tensor is aligned to its element size.

    Tensors are ordered by element size, largest first (as the safetensors library does), so
    with a header padded to 8 bytes every offset is a multiple of its tensor's element size and
    memory-mapped readers can view the data in place.
    """
    ordered = sorted(specs, key=lambda spec: -DTYPE_BYTES[spec.dtype])
    entries: dict[str, object] = {"__metadata__": {"format": "pt"}}
    relative: dict[str, int] = {}
    cursor = 0
    for spec in ordered:
        entries[spec.name] = {
            "dtype": spec.dtype,
            "shape": list(spec.shape),
            "data_offsets": [cursor, cursor + spec.nbytes],
        }
        relative[spec.name] = cursor
        cursor += spec.nbytes
    encoded = json.dumps(entries, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % HEADER_ALIGNMENT)
    header = struct.pack("<Q", len(encoded)) + encoded
    offsets = {name: len(header) + offset for name, offset in relative.items()}
    return ShardLayout(filename, header, offsets, {spec.name: spec for spec in ordered}, len(header) + cursor)


class ShardFile:
    """An output shard being filled: the header is written on open, tensor bytes land at their offsets.

    Writes use ``os.pwrite``, so several threads can fill different tensors of one file at once.
    """

    def __init__(self, folder: Path, layout: ShardLayout) -> None:
        """Creates the file, writes the header and sizes the file (sparse until filled)."""
        self.layout = layout
        self.path = folder / layout.filename
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_at(self._fd, layout.header, 0)
            os.ftruncate(self._fd, layout.size)
        except BaseException:
            os.close(self._fd)
            raise

    def write(self, name: str, data: memoryview | bytes, offset_in_tensor: int = 0) -> None:
        """Writes ``data`` into tensor ``name`` starting ``offset_in_tensor`` bytes into it."""
        spec = self.layout.specs[name]
        if offset_in_tensor + len(data) > spec.nbytes:
            raise ValueError(f"{name}: {len(data)} bytes at {offset_in_tensor} overflow {spec.nbytes}")
        write_at(self._fd, data, self.layout.offsets[name] + offset_in_tensor)

    def close(self, sync: bool = True) -> None:
        """Flushes the file to disk (when ``sync``) and closes it."""
        if self._fd < 0:
            return
        try:
            if sync:
                os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1


def write_at(fd: int, data: memoryview | bytes, offset: int) -> None:
    """Writes all of ``data`` at ``offset`` (pwrite may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def shard_filename(index: int, count: int) -> str:
    """``model.safetensors`` for a single shard, else ``model-0000i-of-0000n.safetensors``."""
    if count == 1:
        return "model.safetensors"
    return f"model-{index + 1:05d}-of-{count:05d}.safetensors"


def group_into_shards(groups: list[list[TensorHeader]], max_shard_bytes: int) -> list[list[TensorHeader]]:
    """Splits tensor groups (kept together) into shards of at most ``max_shard_bytes`` where possible."""
    shards: list[list[TensorHeader]] = []
    current: list[TensorHeader] = []
    current_bytes = 0
    for group in groups:
        group_bytes = sum(spec.nbytes for spec in group)
        if current and current_bytes + group_bytes > max_shard_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.extend(group)
        current_bytes += group_bytes
    if current or not shards:
        shards.append(current)
    return shards


def index_json(layouts: list[ShardLayout]) -> dict[str, object]:
    """The ``model.safetensors.index.json`` content for several shards."""
    weight_map = {name: layout.filename for layout in layouts for name in sorted(layout.specs)}
    total = sum(spec.nbytes for layout in layouts for spec in layout.specs.values())
    return {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
