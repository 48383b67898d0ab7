"""The layer-error report measures small weights whole and large ones on every fourth block, within 2 %."""

from __future__ import annotations

import math

import pytest

from engine.quantize import work_split


@pytest.mark.parametrize(
    ("block_index", "blocks", "measured"),
    [
        (0, 1, True),
        (63, 64, True),  # 64 blocks (8M elements) or fewer: every block
        (1, 64, True),
        (0, 65, True),
        (1, 65, False),
        (3, 65, False),
        (4, 65, True),
        (372, 373, True),
        (371, 373, False),
    ],
)
def test_which_blocks_are_measured(block_index: int, blocks: int, measured: bool) -> None:
    assert work_split.measures_error(block_index, blocks) is measured


@pytest.mark.parametrize(
    ("block_index", "blocks", "block_elements", "measured"),
    [
        # FP8-block's 128-row bands of a 4096-column weight: 524288 elements, 4 x BLOCK_ELEMENTS.
        (1, 16, 4 * 131072, True),  # 16 bands = 8M elements: small, every band
        (1, 17, 4 * 131072, False),  # 17 bands = 8.9M elements: every fourth band
        (4, 32, 4 * 131072, True),  # a 4096 x 4096 weight's bands 0, 4, ..., 28: 4M elements
        (3, 32, 4 * 131072, False),
        (1, 64, 131072, True),  # 64 blocks of BLOCK_ELEMENTS, as counted before
    ],
)
def test_the_small_weight_bound_is_in_elements(
    block_index: int, blocks: int, block_elements: int, measured: bool
) -> None:
    assert work_split.measures_error(block_index, blocks, block_elements) is measured


@pytest.mark.parametrize(
    ("method", "step", "blocks"),
    [("fp8", 32, 128), ("int8-w8a8", 32, 128), ("w4a16", 32, 128), ("fp8-block", 128, 32)],
)
def test_a_sampled_large_layer_reports_the_whole_layers_error_within_a_percent(
    method: str, step: int, blocks: int
) -> None:
    """A 4096 x 4096 weight (128 blocks of 32 rows, or 32 bands of 128 for FP8-block): the quarter measured gives its relative error within 2 %."""
    import torch

    from engine.quantize.scheme_math import quantize_rows
    from engine.quantize.schemes import SCHEMES

    generator = torch.Generator().manual_seed(3)
    weight = (torch.randn(4096, 4096, generator=generator) * 0.02).to(torch.bfloat16)
    weight[::7] *= 5.0  # rows of different scales, so a biased sample would show
    scheme = SCHEMES[method]
    full = [0.0, 0.0]
    sampled = [0.0, 0.0]
    measured = 0
    for index in range(blocks):
        rows = quantize_rows(weight[index * step : (index + 1) * step], scheme)
        full[0] += rows.weight_square_sum
        full[1] += rows.error_square_sum
        if work_split.measures_error(index, blocks, step * 4096):
            measured += 1
            sampled[0] += rows.weight_square_sum
            sampled[1] += rows.error_square_sum
    assert measured == blocks // 4
    assert math.sqrt(sampled[1] / sampled[0]) == pytest.approx(math.sqrt(full[1] / full[0]), rel=0.02)
