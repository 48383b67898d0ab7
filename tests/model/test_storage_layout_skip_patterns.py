"""Which decoder parts a checkpoint's skip list leaves 16-bit, ``re:`` patterns matched as vLLM matches them."""

from __future__ import annotations

import pytest

from engine.model.linear_shape import Part
from engine.model.storage_layout import quantized_parts

ALL: tuple[Part, ...] = ("attention", "linear_attention", "mlp", "experts", "shared_expert")

CASES: list[tuple[list[str], tuple[Part, ...]]] = [
    # Kimi-K2.5's compressed-tensors ignore list: only the routed experts are INT4 (its tensor listing: the dense
    # first layer's mlp.gate_proj / up_proj / down_proj, attention and shared experts are bf16).
    (
        ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*", "re:.*mlp\\.(gate|up|gate_up|down)_proj.*"],
        ("linear_attention", "experts"),
    ),
    # The dense-MLP regex alone: mlp.experts.0.gate_proj does not follow "mlp." directly, so experts stay.
    (
        ["re:.*mlp\\.(gate|up|gate_up|down)_proj.*"],
        ("attention", "linear_attention", "experts", "shared_expert"),
    ),
    # A router's pattern (mlp.gate, end of name) names no Linear part.
    (["re:.*mlp.gate$"], ALL),
    # One layer's MLP is not the whole part.
    (["re:model\\.layers\\.0\\.mlp\\..*"], ALL),
    # Every MLP matrix, routed and shared experts included.
    (["re:.*\\.mlp\\..*"], ("attention", "linear_attention")),
]


@pytest.mark.parametrize(("patterns", "quantized"), CASES)
def test_skip_patterns_leave_the_parts_they_name_16_bit(
    patterns: list[str], quantized: tuple[Part, ...]
) -> None:
    assert quantized_parts(patterns) == quantized
