"""The streaming safetensors writer: files the safetensors library reads back exactly, aligned, in any fill order."""

from __future__ import annotations

import itertools
import json
import random
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from engine.model.safetensors_headers import DTYPE_BYTES, TensorHeader
from engine.quantize.writer import (
    ShardFile,
    group_into_shards,
    index_json,
    layout_shard,
    shard_filename,
)

TORCH_DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "I8": torch.int8,
    "I32": torch.int32,
    "I64": torch.int64,
    "F8_E4M3": torch.float8_e4m3fn,
    "U8": torch.uint8,
}


def random_tensor(spec: TensorHeader, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (spec.nbytes,), dtype=torch.uint8, generator=generator)
    if spec.dtype in ("BF16", "F16", "F32", "F8_E4M3"):
        # Avoid NaN bit patterns so torch.equal can compare floats.
        return torch.randn(spec.shape, generator=generator).to(TORCH_DTYPES[spec.dtype])
    return raw.view(TORCH_DTYPES[spec.dtype]).reshape(spec.shape)


SPECS = [
    TensorHeader("a.weight", "F8_E4M3", (7, 33)),
    TensorHeader("a.weight_scale", "BF16", (7, 1)),
    TensorHeader("b.weight_packed", "I32", (5, 16)),
    TensorHeader("b.weight_shape", "I64", (2,)),
    TensorHeader("norm.weight", "F16", (3,)),
    TensorHeader("c.weight", "I8", (9, 3)),
    TensorHeader("scalar", "F32", ()),
    TensorHeader("empty", "BF16", (0, 4)),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shard_filled_in_random_row_blocks_reads_back_exactly(tmp_path: Path, seed: int) -> None:
    layout = layout_shard("model.safetensors", SPECS)
    tensors = {spec.name: random_tensor(spec, i) for i, spec in enumerate(SPECS)}
    pieces = []
    for spec in SPECS:
        data = tensors[spec.name].contiguous().reshape(-1).view(torch.uint8)
        rows = spec.shape[0] if spec.shape else 1
        row_bytes = spec.nbytes // rows if rows else 0
        for row in range(rows):
            pieces.append((spec.name, data[row * row_bytes : (row + 1) * row_bytes], row * row_bytes))
    random.Random(seed).shuffle(pieces)
    shard = ShardFile(tmp_path, layout)
    for name, data, offset in pieces:
        shard.write(name, memoryview(data.numpy()), offset)
    shard.close()
    assert (tmp_path / "model.safetensors").stat().st_size == layout.size
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        assert set(handle.keys()) == {spec.name for spec in SPECS}
        assert handle.metadata() == {"format": "pt"}
        for spec in SPECS:
            loaded = handle.get_tensor(spec.name)
            assert loaded.dtype == tensors[spec.name].dtype
            assert torch.equal(
                loaded.reshape(-1).view(torch.uint8), tensors[spec.name].reshape(-1).view(torch.uint8)
            )


def test_layout_aligns_every_tensor_to_its_element_size() -> None:
    layout = layout_shard("x.safetensors", SPECS)
    (length,) = struct.unpack("<Q", layout.header[:8])
    assert (8 + length) % 8 == 0
    header = json.loads(layout.header[8:])
    spans = sorted(tuple(entry["data_offsets"]) for name, entry in header.items() if name != "__metadata__")
    assert spans[0][0] == 0
    assert all(left[1] == right[0] for left, right in itertools.pairwise(spans))
    for spec in SPECS:
        assert layout.offsets[spec.name] % DTYPE_BYTES[spec.dtype] == 0


def test_writing_past_a_tensor_is_refused(tmp_path: Path) -> None:
    shard = ShardFile(tmp_path, layout_shard("model.safetensors", SPECS[:2]))
    with pytest.raises(ValueError, match="overflow"):
        shard.write("a.weight_scale", b"\0" * 16)
    shard.close()


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        ShardFile(tmp_path, layout_shard("model.safetensors", SPECS[:1]))
    assert (tmp_path / "model.safetensors").read_bytes() == b"keep"


@pytest.mark.parametrize(
    ("sizes", "limit", "expected"),
    [
        ([10, 10, 10], 25, [[10, 10], [10]]),
        ([10, 10, 10], 30, [[10, 10, 10]]),
        ([40, 5], 30, [[40], [5]]),
        ([], 30, [[]]),
    ],
)
def test_groups_fill_shards_up_to_the_limit(sizes: list[int], limit: int, expected: list[list[int]]) -> None:
    groups = [[TensorHeader(f"t{i}", "U8", (size,))] for i, size in enumerate(sizes)]
    shards = group_into_shards(groups, limit)
    assert [[spec.nbytes for spec in shard] for shard in shards] == expected


def test_a_weight_and_its_scale_stay_in_one_shard() -> None:
    groups = [[TensorHeader("a.weight", "I8", (10,)), TensorHeader("a.weight_scale", "BF16", (5,))]] * 3
    shards = group_into_shards(groups, 25)
    assert [len(shard) for shard in shards] == [2, 2, 2]


@pytest.mark.parametrize(
    ("index", "count", "name"), [(0, 1, "model.safetensors"), (1, 3, "model-00002-of-00003.safetensors")]
)
def test_shard_names_follow_hugging_face(index: int, count: int, name: str) -> None:
    assert shard_filename(index, count) == name


def test_index_maps_every_tensor_and_totals_the_data() -> None:
    layouts = [layout_shard("one", SPECS[:3]), layout_shard("two", SPECS[3:])]
    index = index_json(layouts)
    assert index["weight_map"] == {spec.name: ("one" if i < 3 else "two") for i, spec in enumerate(SPECS)}
    assert index["metadata"] == {"total_size": sum(spec.nbytes for spec in SPECS)}
