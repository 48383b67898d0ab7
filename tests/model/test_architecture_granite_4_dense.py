"""Dense Granite-4.0-H (granitemoehybrid with num_local_experts 0): no experts, every layer's MLP is the shared_mlp.

Config: tests/fixtures/configs/granite-4.0-h-1b.json (ibm-granite/granite-4.0-h-1b, see its README).
vLLM's granitemoehybrid.py builds no block_sparse_moe where ``num_local_experts`` is 0 and a
GraniteMoeSharedMLP (input_linear: 2 × shared_intermediate_size, output_linear) in every layer, so
the MLP's width is ``shared_intermediate_size`` whatever ``intermediate_size`` says. Figures by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.model.architecture import read_architecture
from engine.model.param_count import active_params, decoder_layer_shapes, estimate_params
from engine.plan.kv_cache import kv_bytes_per_token, kv_capacity_for
from tests.plan.model_configs import published_config

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"
H_1B = "granite-4.0-h-1b"
GIB = 1024**3

# h 1536, tied embedding. Mamba2 (48 heads × 64 = 3072, 1 group, state 128, conv_dim 3072 + 256 = 3328):
# in_proj 1536 · (2 · 3072 + 2 · 128 + 48) = 9,904,128 + out_proj 3072 · 1536 = 4,718,592 + conv1d 3328 · 4
# + bias 3328 + dt_bias, A, D 3 · 48 + norm 3072 = 14,642,576; attention (12 heads × 128, 4 KV heads):
# 2 · 1536² + 2 · 1536 · 512 = 6,291,456; shared_mlp 3 · 1536 · 4096 = 18,874,368; norms 2 · 1536.
# 36 · 14,642,576 + 4 · 6,291,456 + 40 · (18,874,368 + 3072) + 100,352 · 1536 + 1536 = 1,461,538,368
# (card: 1.5B).
TOTAL = 1_461_538_368


# changes to the published config, expected total
CASES = [
    ({}, TOTAL),
    # intermediate_size is not what vLLM builds: the shared_mlp's width is.
    ({"intermediate_size": 1024}, TOTAL),
    # A wider shared_mlp: + 40 layers · 3 · 1536 · 2048 more = 377,487,360.
    ({"shared_intermediate_size": 6144}, TOTAL + 377_487_360),
]


@pytest.mark.parametrize(("changes", "total"), CASES)
def test_dense_granite_plans_without_experts(changes: dict[str, int], total: int) -> None:
    arch = read_architecture(published_config(H_1B) | changes, CONFIGS)
    assert arch.moe is None and arch.num_experts is None
    assert estimate_params(arch).total == total
    assert active_params(arch) == total
    layers = decoder_layer_shapes(arch)
    assert layers[0].counts().total == 14_642_576 + (total - TOTAL) // 40 + 18_874_368 + 3072


def test_dense_granite_kv_cache() -> None:
    attention = read_architecture(published_config(H_1B), CONFIGS).attention
    assert attention.description == "GQA 4 KV heads × 128, layers: 36 linear (MAMBA2) + 4 full"
    # 4 attention layers · 4 KV heads · (128 + 128) · 2 B = 8192 B/token.
    assert kv_bytes_per_token(attention, 2) == 8192
    # State 3 · 3328 · 2 + 48 · 64 · 128 · 2 = 19,968 + 786,432 = 806,400 B; CPU block 128 · cdiv(806,400,
    # 128 · 2048) = 512; 512 · 2048 · 4 = 4,194,304 B/block → 1024 blocks in 4 GiB; 4 full vs 36 Mamba2
    # layers: 1 + 9 groups; cdiv(8192, 512) = 16 + 9 · 3 = 43 → 23.81 → int(1024 · 8192 / 43) = 195,083.
    capacity = kv_capacity_for(attention, 4 * GIB, 8192, 128, 2, 2048, state_bytes=(2, 2))
    assert (capacity.block_size, capacity.bytes_per_block, capacity.num_blocks) == (512, 4_194_304, 1024)
    assert (capacity.blocks_per_request, capacity.tokens, capacity.logged_concurrency) == (
        43,
        195_083,
        "23.81",
    )
    assert len(capacity.groups) == 10


def test_an_all_attention_granite_is_no_hybrid() -> None:
    # granite-4.0-1b style (every layer "attention"): vLLM's ModelConfig.is_hybrid is False, no block raise.
    config = published_config(H_1B) | {"layer_types": ["attention"] * 40}
    attention = read_architecture(config, CONFIGS).attention
    assert attention.count("linear") == 0
    assert kv_capacity_for(attention, 4 * GIB, 8192, 128, 2, 2048).block_size == 128
