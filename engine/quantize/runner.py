"""Runs a quantization: pre-flight, the streaming data-free converter, and the hand-off to llm-compressor."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import QuantTuiError
from engine.quantize import work_split
from engine.quantize.config import quantized_model_config
from engine.quantize.report import layer_error, model_card, worst_first
from engine.quantize.request import (
    CALIBRATED_METHODS,
    QuantizeProgress,
    QuantizeReport,
    QuantizeRequest,
)
from engine.quantize.staging import PeakRss, QuantizeCancelled, publish, staging_folder
from engine.quantize.tensor_plan import QuantizePlan, SourceTensor, build_plan, fused_siblings
from engine.quantize.writer import (
    ShardFile,
    ShardLayout,
    group_into_shards,
    index_json,
    layout_shard,
    shard_filename,
)

ProgressCallback = Callable[[QuantizeProgress], None]

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
_PROGRESS_INTERVAL_SECONDS = 0.1


@dataclass(frozen=True)
class _WorkItem:
    tensor: SourceTensor
    row_start: int
    row_stop: int

    @property
    def nbytes(self) -> int:
        rows = self.tensor.shape[0] if self.tensor.shape else 1
        return self.tensor.nbytes * (self.row_stop - self.row_start) // max(rows, 1)


@dataclass(frozen=True)
class _ItemResult:
    weight_square_sum: float
    error_square_sum: float


def preflight(request: QuantizeRequest) -> None:
    """Checks a request without writing anything.

    Raises:
        QuantTuiError: one line naming the first problem: unreadable source, no config.json,
            already quantized, unsupported architecture or shape, output exists, not enough disk
            or memory.
    """
    if request.method in CALIBRATED_METHODS:
        from engine.quantize.calibrated import preflight_calibrated

        preflight_calibrated(request)
        return
    plan = build_plan(request)
    _check_memory(plan, work_split.worker_count(request))


def _check_memory(plan: QuantizePlan, workers: int) -> None:
    """Refuses a run whose streaming working set (the estimate's memory model) exceeds the available memory."""
    import psutil

    from engine.quantize.estimate import streaming_working_bytes

    needed = streaming_working_bytes(plan, workers)
    available = psutil.virtual_memory().available
    if available < needed:
        raise QuantTuiError(
            f"not enough free memory: quantizing with {workers} workers needs about {needed / 1e9:.2f} GB, "
            f"{available / 1e9:.2f} GB is available; pass --workers 1 or close programs"
        )


def quantize_model(
    request: QuantizeRequest,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> QuantizeReport:
    """Quantizes a model folder into a compressed-tensors checkpoint vLLM loads directly.

    The data-free methods stream: each weight is read from the memory-mapped source a block of
    rows at a time, quantized by a pool of threads and written straight to its place in the
    output shard, so memory stays a small multiple of one block whatever the model size. The
    output is assembled in a hidden temporary folder next to the target and renamed at the end;
    a failure or cancellation removes it, and the source is only read.

    Args:
        request: what to quantize, how, and where.
        on_progress: called from the calling thread with progress snapshots.
        cancel: set it to stop the run; ``QuantizeCancelled`` is raised and nothing is left.
        max_shard_bytes: the largest output shard (tensors of one weight stay together).

    Raises:
        QuantTuiError: a pre-flight failure, a full disk, or ``QuantizeCancelled``.
    """
    if request.method in CALIBRATED_METHODS:
        from engine.quantize.calibrated import quantize_calibrated

        return quantize_calibrated(request, on_progress=on_progress, cancel=cancel)
    started = time.monotonic()
    workers = work_split.worker_count(request)
    plan = build_plan(request)
    _check_memory(plan, workers)
    cancel = cancel or threading.Event()
    with PeakRss() as rss, staging_folder(plan.output) as staging, _torch_threads(workers):
        converter = _Converter(plan, staging, workers, on_progress, cancel, rss, started)
        layouts, errors = converter.run(max_shard_bytes)
        converter.emit("finishing", "writing config, tokenizer and model card", force=True)
        _write_metadata(plan, staging, layouts)
        report = QuantizeReport(
            source=plan.source,
            output=plan.output,
            method=plan.method,
            input_bytes=plan.input_bytes,
            output_bytes=sum((staging / layout.filename).stat().st_size for layout in layouts),
            tensors_quantized=sum(1 for tensor in plan.tensors if tensor.action == "quantize"),
            tensors_copied=sum(1 for tensor in plan.tensors if tensor.action == "copy"),
            seconds=time.monotonic() - started,
            peak_rss_bytes=rss.sample(),
            layer_errors=errors,
        )
        card = model_card(report, plan.scheme.description, plan.scheme.format, plan.unquantized_linear)
        (staging / "README.md").write_text(card, encoding="utf-8")
        if cancel.is_set():
            raise QuantizeCancelled("quantization cancelled; nothing was written")
        publish(staging, plan.output)
    converter.emit("done", f"wrote {plan.output}", force=True)
    return report


class _Converter:
    """Feeds work items to the thread pool, writes their results, and reports progress."""

    def __init__(
        self,
        plan: QuantizePlan,
        staging: Path,
        workers: int,
        on_progress: ProgressCallback | None,
        cancel: threading.Event,
        rss: PeakRss,
        started: float,
    ) -> None:
        self.plan = plan
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
        self._global_scales: dict[str, Any] = {}

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

    def _items(self) -> Iterator[_WorkItem]:
        for tensor in self.plan.tensors:
            if not tensor.shape:
                yield _WorkItem(tensor, 0, 1)
                continue
            rows = tensor.shape[0]
            row_elements = max(1, tensor.nbytes // max(rows, 1) // _item_bytes(tensor.dtype))
            step = max(1, work_split.CHUNK_ELEMENTS // row_elements)
            if tensor.action == "quantize":
                step = work_split.whole_scale_rows(step, self.plan.scheme)
            if rows == 0:
                yield _WorkItem(tensor, 0, 0)
            for start in range(0, rows, step):
                yield _WorkItem(tensor, start, min(rows, start + step))

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
                    self._global_scales = self._fused_global_scales(pool)
                pending: deque[tuple[_WorkItem, Future[_ItemResult]]] = deque()
                try:
                    for item in self._items():
                        if self.cancel.is_set():
                            raise QuantizeCancelled("quantization cancelled; nothing was written")
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
        item: _WorkItem,
        future: Future[_ItemResult],
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

    def _fused_global_scales(self, pool: ThreadPoolExecutor) -> dict[str, Any]:
        """Each quantized weight's NVFP4 global scale, the smallest of its fused siblings' (llm-compressor's rule).

        vLLM keeps one global scale for a fused q/k/v or gate/up layer (the largest, with a
        warning), so siblings must agree; the smallest keeps every sibling's FP8 scales in range.
        This is a first, read-only pass over the quantized weights.
        """
        from engine.quantize.schemes import global_scale_from_absmax

        quantized = [tensor for tensor in self.plan.tensors if tensor.action == "quantize"]
        self.emit("planning", "measuring NVFP4 global scales", force=True)
        absmax = dict(zip((t.name for t in quantized), pool.map(self._absolute_max, quantized), strict=True))
        scales = {name: global_scale_from_absmax(value) for name, value in absmax.items()}
        shared: dict[str, Any] = {}
        for name in scales:
            siblings = [other for other in fused_siblings(name) if other in scales] or [name]
            shared[name] = min((scales[other] for other in siblings), key=float)
        return shared

    def _absolute_max(self, tensor: SourceTensor) -> Any:
        """The absolute maximum of a whole source weight, read a chunk of rows at a time."""
        from safetensors import safe_open

        from engine.quantize.schemes import absolute_max

        rows = tensor.shape[0]
        step = max(1, work_split.CHUNK_ELEMENTS // max(1, tensor.shape[1]))
        result = None
        for start in range(0, rows, step):
            if self.cancel.is_set():
                break
            with safe_open(str(tensor.file), framework="pt") as handle:
                value = absolute_max(handle.get_slice(tensor.name)[start : start + step])
            result = value if result is None else max(result, value, key=float)
        if result is None:  # cancelled before the first read; the run stops at its first item
            import torch

            return torch.zeros(1)
        return result

    def _work(self, item: _WorkItem) -> _ItemResult:
        """Reads a block of rows, quantizes or copies it, and writes it in place (in a pool thread)."""
        if self.cancel.is_set():
            return _ItemResult(0.0, 0.0)
        from safetensors import safe_open

        tensor = item.tensor
        # A handle per item: safe_open memory-maps the whole file and every page read stays in this
        # process's RSS while the handle lives, so a long-lived handle would grow to the shard's size.
        with safe_open(str(tensor.file), framework="pt") as handle:
            if not tensor.shape:
                rows = handle.get_tensor(tensor.name)
            else:
                rows = handle.get_slice(tensor.name)[item.row_start : item.row_stop]
        if tensor.action == "copy":
            self._write_rows(tensor.name, rows, item.row_start, tensor.shape)
            return _ItemResult(0.0, 0.0)
        from engine.quantize.schemes import quantize_rows

        scheme = self.plan.scheme
        weight_spec, scale_spec = tensor.outputs[0], tensor.outputs[1]
        step = work_split.whole_scale_rows(max(1, work_split.BLOCK_ELEMENTS // tensor.shape[1]), scheme)
        global_scale = self._global_scales.get(tensor.name) if scheme.global_scale else None
        weight_sq = error_sq = 0.0
        for offset in range(0, rows.shape[0], step):
            quantized = quantize_rows(rows[offset : offset + step], scheme, global_scale=global_scale)
            start = item.row_start + offset
            self._write_rows(weight_spec.name, quantized.weight, start, weight_spec.shape)
            self._write_rows(
                scale_spec.name, quantized.scale, start // scheme.scale_row_divisor, scale_spec.shape
            )
            weight_sq += quantized.weight_square_sum
            error_sq += quantized.error_square_sum
        if item.row_start == 0 and len(tensor.outputs) > 2:
            extra = tensor.outputs[2]
            if global_scale is not None:
                self._shards[extra.name].write(extra.name, struct.pack("<f", float(global_scale)))
            else:
                self._shards[extra.name].write(extra.name, struct.pack("<2q", *tensor.shape))
        return _ItemResult(weight_sq, error_sq)

    def _write_rows(self, name: str, rows: Any, row_start: int, shape: tuple[int, ...]) -> None:
        import torch

        data = rows.contiguous().reshape(-1).view(torch.uint8).numpy()
        row_bytes = data.nbytes // max(1, rows.shape[0]) if rows.ndim else 0
        self._shards[name].write(name, memoryview(data), row_start * row_bytes)


def _item_bytes(dtype: str) -> int:
    from engine.model.safetensors_headers import DTYPE_BYTES

    return int(DTYPE_BYTES[dtype])


def _write_metadata(plan: QuantizePlan, staging: Path, layouts: list[ShardLayout]) -> None:
    """Index (when sharded), config.json with quantization_config, and the copied small files."""
    if len(layouts) > 1:
        (staging / "model.safetensors.index.json").write_text(
            json.dumps(index_json(layouts), indent=2) + "\n", encoding="utf-8"
        )
    for path in plan.files_to_copy:
        shutil.copyfile(path, staging / path.name)
    config = quantized_model_config(plan.config, plan.scheme, plan.unquantized_linear)
    (staging / "config.json").write_text(
        json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


@contextlib.contextmanager
def _torch_threads(workers: int) -> Iterator[None]:
    """Gives each pool thread one intra-op thread while the pool runs, so cores are not oversubscribed."""
    import torch

    previous = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
