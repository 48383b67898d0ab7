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


@pytest.mark.parametrize("method", ["fp8", "int8-w8a8", "w4a16"])
def test_a_sampled_large_layer_reports_the_whole_layers_error_within_a_percent(method: str) -> None:
    """A 4096 x 4096 weight (128 blocks of 32 rows): the quarter of blocks measured gives its relative error within 2 %."""
    import torch

    from engine.quantize.scheme_math import quantize_rows
    from engine.quantize.schemes import SCHEMES

    generator = torch.Generator().manual_seed(3)
    weight = (torch.randn(4096, 4096, generator=generator) * 0.02).to(torch.bfloat16)
    weight[::7] *= 5.0  # rows of different scales, so a biased sample would show
    scheme = SCHEMES[method]
    step = work_split.BLOCK_ELEMENTS // 4096
    blocks = 4096 // step
    full = [0.0, 0.0]
    sampled = [0.0, 0.0]
    for index in range(blocks):
        rows = quantize_rows(weight[index * step : (index + 1) * step], scheme)
        full[0] += rows.weight_square_sum
        full[1] += rows.error_square_sum
        if work_split.measures_error(index, blocks):
            sampled[0] += rows.weight_square_sum
            sampled[1] += rows.error_square_sum
    assert blocks == 128
    assert math.sqrt(sampled[1] / sampled[0]) == pytest.approx(math.sqrt(full[1] / full[0]), rel=0.02)
