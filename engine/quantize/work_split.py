"""How a data-free run splits its work: rows per item and per quantization block, and how many threads."""

from __future__ import annotations

import os

from engine.errors import QuantTuiError
from engine.quantize.request import QuantizeRequest
from engine.quantize.schemes import Scheme

# Elements of a weight read by one work item (4 MB of bf16): per-item overhead does not show.
CHUNK_ELEMENTS = 1 << 21
# The same chunk of a 16-bit source in bytes.
CHUNK_BYTES = 2 * CHUNK_ELEMENTS
# Elements quantized at once inside an item: temporaries this small are reused by the allocator
# instead of being faulted in fresh, which on CPU costs more than the arithmetic.
BLOCK_ELEMENTS = 1 << 17
MAX_WORKERS = 8
# The layer error report measures every block of a small weight, and every ERROR_SAMPLE_EVERY-th
# block (rows spread over the whole weight, at least 2M elements) of one with more than
# ERROR_FULL_BLOCKS blocks of BLOCK_ELEMENTS: dequantizing to measure costs as much as quantizing,
# and a quarter of a large weight's rows gives its relative error within about 2 %. The bound is in
# elements, not blocks: FP8-block's blocks are whole 128-row bands (4x BLOCK_ELEMENTS at 4096 columns),
# so counting its blocks measured every one of a 4096 x 4096 weight and made it the slowest method.
ERROR_SAMPLE_EVERY = 4
ERROR_FULL_BLOCKS = 64


def worker_count(request: QuantizeRequest) -> int:
    """The threads a run uses: the request's, else the CPU count (at most MAX_WORKERS)."""
    if request.workers is not None:
        if request.workers < 1:
            raise QuantTuiError(f"workers must be at least 1, not {request.workers}")
        return request.workers
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def whole_scale_rows(rows: int, scheme: Scheme) -> int:
    """``rows`` rounded down to whole scale rows (block-scaled weights are cut at block boundaries)."""
    height = scheme.scale_row_divisor
    return max(height, rows // height * height)


def measures_error(block_index: int, blocks: int, block_elements: int = BLOCK_ELEMENTS) -> bool:
    """Whether block ``block_index`` of a weight of ``blocks`` blocks of ``block_elements`` is dequantized to measure error."""
    small = blocks * block_elements <= ERROR_FULL_BLOCKS * BLOCK_ELEMENTS
    return small or block_index % ERROR_SAMPLE_EVERY == 0
