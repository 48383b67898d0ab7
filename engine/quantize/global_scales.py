"""NVFP4 global scales, measured a few weights ahead of the quantizing: a fused layer's siblings share the smallest."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from engine.quantize import work_split
from engine.quantize.device import ComputeDevice
from engine.quantize.ignore_patterns import fused_siblings
from engine.quantize.tensor_plan import SourceTensor

if TYPE_CHECKING:
    import torch

# Quantized weights whose absolute maxima are measured ahead of the one being quantized: their
# reads then overlap the quantizing, and warm the page cache for it.
LOOKAHEAD_WEIGHTS = 2


class GlobalScales:
    """Each quantized weight's NVFP4 global scale, the smallest of its fused siblings' (llm-compressor's rule).

    vLLM keeps one global scale for a fused q/k/v or gate/up layer (the largest, with a warning),
    so siblings must agree; the smallest keeps every sibling's FP8 scales in range. Each weight's
    absolute maximum is a read-only pass over it, run in the pool just before its items.
    """

    def __init__(
        self,
        tensors: Sequence[SourceTensor],
        pool: ThreadPoolExecutor,
        cancel: threading.Event,
        device: ComputeDevice,
    ) -> None:
        """Plans the measurements for the quantized ``tensors`` (in the order their items will run on ``device``)."""
        self._quantized = [tensor for tensor in tensors if tensor.action == "quantize"]
        self._index = {tensor.name: i for i, tensor in enumerate(self._quantized)}
        self._pool = pool
        self._cancel = cancel
        self._device = device
        self._absmax: dict[str, Future[torch.Tensor]] = {}
        self._shared: dict[str, torch.Tensor] = {}

    def prepare(self, tensor: SourceTensor) -> None:
        """Submits the measurements ``tensor``'s items wait for (its siblings') and the next few weights'.

        Called on the submitting thread before the tensor's first item is submitted, so the pool
        (first in, first out) has started every measurement an item waits for before that item.
        """
        start = self._index[tensor.name]
        for ahead in self._quantized[start : start + 1 + LOOKAHEAD_WEIGHTS]:
            for name in self._siblings(ahead.name):
                if name not in self._absmax:
                    self._absmax[name] = self._pool.submit(self._measure, self._quantized[self._index[name]])

    def scale(self, name: str) -> torch.Tensor:
        """The FP32 global scale of weight ``name``, on the device (in a pool thread; waits for its siblings')."""
        shared = self._shared.get(name)
        if shared is None:
            from engine.quantize.scheme_math import global_scale_from_absmax

            scales = [
                global_scale_from_absmax(self._absmax[other].result()) for other in self._siblings(name)
            ]
            shared = self._shared.setdefault(name, min(scales, key=float))
        return shared

    def _siblings(self, name: str) -> list[str]:
        return [other for other in fused_siblings(name) if other in self._index] or [name]

    def _measure(self, tensor: SourceTensor) -> torch.Tensor:
        """The absolute maximum of a whole source weight, read a chunk of rows at a time and measured on the device.

        Each chunk is measured in the quantizing's blocks, so the pass's temporaries are block-sized
        as the quantizing's are: a chunk-sized one per chunk left the allocator keeping about a
        chunk more per thread (the 16-bit magnitudes next to the rows read). The maximum of the
        blocks' maxima is taken with ``torch.maximum``, which keeps a NaN, as a whole-tensor
        ``amax`` (compressed-tensors') does.
        """
        import torch

        from engine.model.safetensors_headers import open_tensors
        from engine.quantize.scheme_math import absolute_max

        cols = max(1, tensor.shape[1])
        step = max(1, work_split.CHUNK_ELEMENTS // cols)
        block = max(1, self._device.block_elements // cols)
        result = None
        with open_tensors(tensor.file) as reader:
            for start in range(0, tensor.shape[0], step):
                if self._cancel.is_set():
                    break
                chunk = self._device.upload(
                    reader.read_rows(tensor.name, start, start + step, read_ahead=2 * work_split.CHUNK_BYTES)
                )
                for offset in range(0, chunk.shape[0], block):
                    value = absolute_max(chunk[offset : offset + block])
                    result = value if result is None else torch.maximum(result, value)
        if result is None:  # cancelled before the first read; the run stops at its first item
            return torch.zeros(1, device=self._device.type)
        return result
