"""The streaming data-free converter: reads blocks of rows, quantizes them on the CPU or a GPU in a thread pool, writes them in place."""

from __future__ import annotations

import errno
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import QuantTuiError
from engine.quantize import work_split
from engine.quantize.device import ComputeDevice
from engine.quantize.global_scales import GlobalScales
from engine.quantize.report import layer_error, worst_first
from engine.quantize.request import ProgressCallback, QuantizeProgress
from engine.quantize.staging import PeakRss, QuantizeCancelled
from engine.quantize.tensor_plan import QuantizePlan, SourceTensor
from engine.quantize.writer import (
    ShardFile,
    ShardLayout,
    group_into_shards,
    layout_shard,
    shard_filename,
)

_PROGRESS_INTERVAL_SECONDS = 0.1
# Items' worth of source data after an item's rows the kernel is asked to read ahead: the pool's
# next reads then find their pages in memory while this one is quantized.
READ_AHEAD_ITEMS = 2


@dataclass(frozen=True)
class WorkItem:
    """A block of rows of one source tensor, the unit a pool thread reads and writes."""

    tensor: SourceTensor
    row_start: int
    row_stop: int

    @property
    def nbytes(self) -> int:
        rows = self.tensor.shape[0] if self.tensor.shape else 1
        return self.tensor.nbytes * (self.row_stop - self.row_start) // max(rows, 1)


@dataclass(frozen=True)
class ItemResult:
    """The squared sums a quantized block contributes to its layer's error."""

    weight_square_sum: float
    error_square_sum: float


class StreamingConverter:
    """Feeds work items to the thread pool, writes their results, and reports progress.

    Rows to quantize travel to the compute device after they are read and their results back to
    the host before they are written; copied tensors never leave the host.
    """

    def __init__(
        self,
        plan: QuantizePlan,
        staging: Path,
        workers: int,
        on_progress: ProgressCallback | None,
        cancel: threading.Event,
        rss: PeakRss,
        started: float,
        device: ComputeDevice,
    ) -> None:
        self.plan = plan
        self.device = device
        self.staging = staging
        self.workers = workers
        self.on_progress = on_progress
        self.cancel = cancel
        self.rss = rss
        self.started = started
        self.bytes_total = plan.input_bytes
        self.bytes_done = 0
        self.tensors_done = 0
        self.current = ""
        self._last_emit = 0.0
        self._shards: dict[str, ShardFile] = {}
        self._global_scales: GlobalScales | None = None

    def emit(self, stage: str, message: str = "", force: bool = False) -> None:
        """Sends a progress snapshot, at most every 0.1 s unless ``force``."""
        now = time.monotonic()
        if self.on_progress is None or (not force and now - self._last_emit < _PROGRESS_INTERVAL_SECONDS):
            return
        self._last_emit = now
        elapsed = max(now - self.started, 1e-9)
        rate = self.bytes_done / elapsed
        remaining = self.bytes_total - self.bytes_done
        eta = remaining / rate if rate > 0 and self.bytes_done else None
        self.on_progress(
            QuantizeProgress(
                tensors_done=self.tensors_done,
                tensors_total=len(self.plan.tensors),
                bytes_done=self.bytes_done,
                bytes_total=self.bytes_total,
                rate_bytes_per_s=rate,
                eta_s=eta,
                current_tensor=self.current,
                peak_rss_bytes=self.rss.peak,
                stage=stage,
                message=message,
            )
        )

    def _items(self) -> Iterator[WorkItem]:
        for tensor in self.plan.tensors:
            if not tensor.shape:
                yield WorkItem(tensor, 0, 1)
                continue
            rows = tensor.shape[0]
            row_elements = max(1, tensor.nbytes // max(rows, 1) // _item_bytes(tensor.dtype))
            step = max(1, work_split.CHUNK_ELEMENTS // row_elements)
            if tensor.action == "quantize":
                step = work_split.whole_scale_rows(step, self.plan.scheme)
            if rows == 0:
                yield WorkItem(tensor, 0, 0)
            for start in range(0, rows, step):
                yield WorkItem(tensor, start, min(rows, start + step))

    def run(self, max_shard_bytes: int) -> tuple[list[ShardLayout], tuple[Any, ...]]:
        """Writes every shard; returns their layouts and the layer errors, worst first."""
        groups = [list(tensor.outputs) for tensor in self.plan.tensors]
        shards = group_into_shards(groups, max_shard_bytes)
        layouts = [layout_shard(shard_filename(i, len(shards)), specs) for i, specs in enumerate(shards)]
        self.emit("planning", f"{len(self.plan.tensors)} tensors into {len(layouts)} shard(s)", force=True)
        sums: dict[str, list[float]] = {}
        chunks_left: dict[str, int] = {}
        for item in self._items():
            chunks_left[item.tensor.name] = chunks_left.get(item.tensor.name, 0) + 1
        try:
            for layout in layouts:
                shard = ShardFile(self.staging, layout)
                for name in layout.specs:
                    self._shards[name] = shard
            with ThreadPoolExecutor(self.workers, thread_name_prefix="quantize") as pool:
                if self.plan.scheme.global_scale:
                    self._global_scales = GlobalScales(self.plan.tensors, pool, self.cancel, self.device)
                pending: deque[tuple[WorkItem, Future[ItemResult]]] = deque()
                try:
                    for item in self._items():
                        if self.cancel.is_set():
                            raise QuantizeCancelled("quantization cancelled; nothing was written")
                        if (
                            self._global_scales is not None
                            and item.tensor.action == "quantize"
                            and not item.row_start
                        ):
                            self._global_scales.prepare(item.tensor)
                        pending.append((item, pool.submit(self._work, item)))
                        while len(pending) > self.workers:
                            self._finish(*pending.popleft(), sums, chunks_left)
                    while pending:
                        self._finish(*pending.popleft(), sums, chunks_left)
                except BaseException:
                    for _, future in pending:
                        future.cancel()
                    raise
            for shard in {id(shard): shard for shard in self._shards.values()}.values():
                shard.close()
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise QuantTuiError(
                    f"the disk filled up while writing {self.plan.output.name}; free some space and run again "
                    "(the partial output was removed)"
                ) from None
            raise
        finally:
            for shard in self._shards.values():
                shard.close(sync=False)
        errors = [layer_error(name.removesuffix(".weight"), *values) for name, values in sums.items()]
        return layouts, worst_first(errors)

    def _finish(
        self,
        item: WorkItem,
        future: Future[ItemResult],
        sums: dict[str, list[float]],
        chunks_left: dict[str, int],
    ) -> None:
        self.current = item.tensor.name
        result = future.result()
        name = item.tensor.name
        if item.tensor.action == "quantize":
            totals = sums.setdefault(name, [0.0, 0.0])
            totals[0] += result.weight_square_sum
            totals[1] += result.error_square_sum
        self.bytes_done += item.nbytes
        chunks_left[name] -= 1
        if chunks_left[name] == 0:
            self.tensors_done += 1
        if self.cancel.is_set():
            raise QuantizeCancelled("quantization cancelled; nothing was written")
        self.emit("quantizing", force=self.tensors_done == len(self.plan.tensors))

    def _work(self, item: WorkItem) -> ItemResult:
        """Reads a block of rows, quantizes or copies it, and writes it in place (in a pool thread)."""
        if self.cancel.is_set():
            return ItemResult(0.0, 0.0)
        from engine.model.safetensors_headers import open_tensors

        tensor = item.tensor
        # The file is opened afresh for each item, so a shard replaced since the last one (renamed
        # over by a download) is noticed instead of being read on from the old file.
        with open_tensors(tensor.file) as reader:
            rows = reader.read_rows(
                tensor.name,
                item.row_start,
                item.row_stop,
                read_ahead=READ_AHEAD_ITEMS * work_split.CHUNK_BYTES,
            )
        if tensor.action == "copy":
            self._write_rows(tensor.name, rows, item.row_start, tensor.shape)
            return ItemResult(0.0, 0.0)
        from engine.quantize.scheme_math import quantize_rows

        scheme = self.plan.scheme
        weight_spec, scale_spec = tensor.outputs[0], tensor.outputs[1]
        step = work_split.whole_scale_rows(max(1, self.device.block_elements // tensor.shape[1]), scheme)
        rows = self.device.upload(rows)
        global_scale = self._global_scales.scale(tensor.name) if self._global_scales is not None else None
        weight_sq = error_sq = 0.0
        blocks = -(-tensor.shape[0] // step)
        for offset in range(0, rows.shape[0], step):
            start = item.row_start + offset
            measure = work_split.measures_error(start // step, blocks, step * tensor.shape[1])
            quantized = quantize_rows(
                rows[offset : offset + step],
                scheme,
                measure_error=measure,
                global_scale=global_scale,
                slice_elements=None if self.device.is_accelerator else self.device.block_elements,
            )
            self._write_rows(
                weight_spec.name, self.device.download(quantized.weight), start, weight_spec.shape
            )
            self._write_rows(
                scale_spec.name,
                self.device.download(quantized.scale),
                start // scheme.scale_row_divisor,
                scale_spec.shape,
            )
            weight_sq += quantized.weight_square_sum
            error_sq += quantized.error_square_sum
        if item.row_start == 0 and len(tensor.outputs) > 2:
            extra = tensor.outputs[2]
            if global_scale is not None:
                self._shards[extra.name].write(extra.name, struct.pack("<f", float(global_scale)))
            else:
                self._shards[extra.name].write(extra.name, struct.pack("<2q", *tensor.shape))
        return ItemResult(weight_sq, error_sq)

    def _write_rows(self, name: str, rows: Any, row_start: int, shape: tuple[int, ...]) -> None:
        import torch

        data = rows.contiguous().reshape(-1).view(torch.uint8).numpy()
        row_bytes = data.nbytes // max(1, rows.shape[0]) if rows.ndim else 0
        self._shards[name].write(name, memoryview(data), row_start * row_bytes)


def _item_bytes(dtype: str) -> int:
    from engine.model.safetensors_headers import DTYPE_BYTES

    return int(DTYPE_BYTES[dtype])
