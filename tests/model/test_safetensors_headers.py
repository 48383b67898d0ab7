"""Tests for engine.model.safetensors_headers: the dtype table, headers, and tensor data read with plain reads (a changed shard is a ModelError, not SIGBUS)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file

from engine.errors import ModelError
from engine.model.safetensors_headers import (
    DTYPE_BYTES,
    TORCH_DTYPE_BYTES,
    TORCH_DTYPES,
    TensorHeader,
    open_tensors,
    read_safetensors_headers,
    read_tensor_locations,
)

REPO = Path(__file__).resolve().parents[2]

TENSORS: dict[str, Callable[[], torch.Tensor]] = {
    "bf16 rows": lambda: torch.randn(37, 512).to(torch.bfloat16),
    "fp16 rows": lambda: torch.randn(5, 3, 8).to(torch.float16),
    "fp32 vector": lambda: torch.randn(129),
    "fp8 e4m3": lambda: (torch.randn(16, 32) * 10).to(torch.float8_e4m3fn),
    "fp8 e5m2": lambda: torch.randn(4, 4).to(torch.float8_e5m2),
    "fp8 e8m0 scales": lambda: torch.rand(8, 2).add(0.5).to(torch.float8_e8m0fnu),
    "int8": lambda: torch.randint(-128, 128, (9, 16), dtype=torch.int8),
    "uint8": lambda: torch.randint(0, 256, (3, 7), dtype=torch.uint8),
    "int32 packed": lambda: torch.randint(-(2**31), 2**31 - 1, (6, 4), dtype=torch.int32),
    "int64 shape": lambda: torch.tensor([4096, 11008]),
    "bool mask": lambda: torch.rand(10) > 0.5,
    "float64": lambda: torch.randn(3, 3, dtype=torch.float64),
    "scalar": lambda: torch.tensor(3.5),
    "zero rows": lambda: torch.empty(0, 16, dtype=torch.bfloat16),
}


def test_one_dtype_table_sizes_records() -> None:
    assert TensorHeader("w", "F4", (3, 5)).nbytes == 8  # 15 half-bytes round up
    assert TensorHeader("w", "F8_E8M0", (7,)).nbytes == 7
    assert TensorHeader("w", "BF16", (2, 3)).nbytes == 12
    assert DTYPE_BYTES["I64"] == 8
    assert TORCH_DTYPES["F8_E4M3"] == "float8_e4m3fn" and TORCH_DTYPES["F4"] == "uint8"
    # A config's torch_dtype: uint8 is one byte (F4's packed half-bytes are read as uint8 too).
    assert (TORCH_DTYPE_BYTES["float32"], TORCH_DTYPE_BYTES["bfloat16"], TORCH_DTYPE_BYTES["uint8"]) == (
        4,
        2,
        1,
    )


def _same_bits(left: torch.Tensor, right: torch.Tensor) -> bool:
    if left.dtype != right.dtype or left.shape != right.shape:
        return False
    return torch.equal(
        left.contiguous().view(-1).view(torch.uint8), right.contiguous().view(-1).view(torch.uint8)
    )


@pytest.fixture
def shard(tmp_path: Path) -> Path:
    """A safetensors file holding every tensor of TENSORS (random values, seeded)."""
    torch.manual_seed(0)
    path = tmp_path / "model.safetensors"
    save_file({name: make() for name, make in TENSORS.items()}, str(path))
    return path


@pytest.mark.parametrize("name", list(TENSORS))
def test_whole_tensors_and_row_ranges_are_what_safetensors_reads(shard: Path, name: str) -> None:
    expected = load_file(str(shard))[name]
    with open_tensors(shard) as reader:
        assert _same_bits(reader.get_tensor(name), expected)
        rows = expected.shape[0] if expected.ndim else 1
        for start, stop in [(0, rows), (0, 1), (rows // 3, rows // 3 + 2), (rows - 1, rows + 5)]:
            want = expected[start:stop] if expected.ndim else expected
            assert _same_bits(reader.read_rows(name, start, stop), want), (start, stop)


def test_locations_are_in_file_order_and_match_the_header(shard: Path) -> None:
    locations = read_tensor_locations(shard)
    assert sorted(locations) == sorted(TENSORS)
    starts = [location.start for location in locations.values()]
    assert starts == sorted(starts)
    assert all(location.stop - location.start == location.header.nbytes for location in locations.values())
    assert max(location.stop for location in locations.values()) == shard.stat().st_size


def test_headers_are_what_safetensors_lists(shard: Path) -> None:
    with safe_open(str(shard), framework="pt") as handle:
        listed = [
            (name, handle.get_slice(name).get_dtype(), tuple(handle.get_slice(name).get_shape()))
            for name in handle.keys()  # noqa: SIM118 - safe_open has no __iter__
        ]
    headers = read_safetensors_headers([shard, shard])
    assert [(header.name, header.dtype, header.shape) for header in headers] == listed + listed


def test_a_dtype_quant_tui_cannot_read_is_listed_and_its_data_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_numpy({"ids": np.arange(6, dtype=np.uint32).reshape(2, 3), "w": np.ones(4, np.float16)}, str(path))
    assert [(h.name, h.dtype, h.shape) for h in read_safetensors_headers([path])] == [
        ("ids", "U32", (2, 3)),
        ("w", "F16", (4,)),
    ]
    with open_tensors(path) as reader:
        assert reader.get_tensor("w").tolist() == [1.0] * 4
        with pytest.raises(
            ModelError, match=r"tensor ids in model\.safetensors has dtype U32, which quant-tui"
        ):
            reader.get_tensor("ids")


def _truncate_to_half_of(name: str) -> Callable[[Path], None]:
    def cut(path: Path) -> None:
        location = read_tensor_locations(path)[name]
        os.truncate(path, location.start + (location.stop - location.start) // 2)

    return cut


# (what happens to the shard after it was opened, what is read then, words the error names)
CHANGED_WHILE_OPEN = [
    (
        "truncated in place inside the tensor",
        _truncate_to_half_of("bf16 rows"),
        "bf16 rows",
        ["expected", "got"],
    ),
    ("truncated in place to nothing", lambda path: os.truncate(path, 0), "fp32 vector", ["got 0"]),
]


@pytest.mark.parametrize(("change", "cut", "name", "words"), CHANGED_WHILE_OPEN)
def test_a_shard_truncated_in_place_while_open_is_a_short_read(
    shard: Path, change: str, cut: Callable[[Path], None], name: str, words: list[str]
) -> None:
    with open_tensors(shard) as reader, pytest.raises(ModelError) as raised:
        cut(shard)
        reader.get_tensor(name)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("model.safetensors is incomplete or damaged (")
    assert raised.value.fix.startswith("wait until any download or copy")
    for word in words:
        assert word in message, message


def _garbage_header(path: Path) -> None:
    path.write_bytes((20).to_bytes(8, "little") + b"{not json at all....")


# (what happened to the shard before it was opened, words the error names)
CHANGED_BEFORE_OPEN = [
    ("truncated inside the data", _truncate_to_half_of("int8"), ["header lists data up to byte"]),
    ("truncated inside the header", lambda path: os.truncate(path, 12), ["expected", "at offset 8"]),
    ("emptied", lambda path: os.truncate(path, 0), ["expected 8 bytes at offset 0, got 0"]),
    ("gone", lambda path: path.unlink(), ["No such file or directory"]),
    ("overwritten with garbage", _garbage_header, ["not valid safetensors JSON"]),
    ("a huge header length", lambda path: path.write_bytes(b"\xff" * 16), ["its header claims"]),
]


@pytest.mark.parametrize(("change", "cut", "words"), CHANGED_BEFORE_OPEN)
def test_a_shard_changed_before_opening_is_one_model_error(
    shard: Path, change: str, cut: Callable[[Path], None], words: list[str]
) -> None:
    cut(shard)
    with pytest.raises(ModelError) as raised, open_tensors(shard) as reader:
        reader.get_tensor("int8")
    message = str(raised.value)
    assert "\n" not in message and message.startswith("model.safetensors is incomplete or damaged (")
    for word in words:
        assert word in message, message


def test_a_tensor_the_shard_no_longer_holds_is_a_model_error(shard: Path) -> None:
    missing = "model.layers.0.mlp.up_proj.weight"
    with (
        pytest.raises(ModelError, match=re.escape(f"it holds no tensor {missing}")),
        open_tensors(shard) as reader,
    ):
        reader.read_rows(missing, 0, 1)


def test_an_error_raised_by_the_callers_block_is_not_reworded(shard: Path) -> None:
    with pytest.raises(OSError, match="disk full"), open_tensors(shard):
        raise OSError(28, "disk full")


# Opens the shard, truncates it in place, then reads a tensor that lay beyond the cut. A memory
# map (safetensors' safe_open) gets SIGBUS there; plain reads get fewer bytes and a ModelError.
TRUNCATE_WHILE_OPEN_CHILD = """
import os, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
path, how = Path(sys.argv[1]), sys.argv[2]
if how == "plain reads":
    from engine.errors import ModelError
    from engine.model.safetensors_headers import open_tensors
    try:
        with open_tensors(path) as reader:
            os.truncate(path, 64)
            reader.get_tensor("bf16 rows")
    except ModelError as error:
        print(error)
else:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as handle:
        os.truncate(path, 64)
        print(handle.get_tensor("bf16 rows").sum())
"""


@pytest.mark.parametrize(
    ("how", "returncode"),
    [("plain reads", 0), ("memory map (safetensors safe_open)", -signal.SIGBUS)],
)
def test_truncation_in_place_during_a_read_ends_no_process(shard: Path, how: str, returncode: int) -> None:
    """The reason the reader exists: the same truncation kills a process reading through a memory map."""
    run = subprocess.run(
        [sys.executable, "-c", TRUNCATE_WHILE_OPEN_CHILD, str(shard), how],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == returncode, run.stdout + run.stderr
    if returncode == 0:
        assert run.stdout.startswith("model.safetensors is incomplete or damaged (expected ")
