"""Falcon-H1 (falcon_h1) read config-only: attention and a Mamba2 mixer side by side in every layer.

Config: tests/fixtures/configs/falcon-h1-0.5b.json (tiiuae/Falcon-H1-0.5B, see its README). vLLM's
falcon_h1.py::FalconH1ParallelHybrid runs a MambaMixer2 (no gated norm unless ``mamba_rms_norm``) and
attention (qkv_proj, o_proj, no bias) on the same input, then a gated MLP; input_layernorm and
pre_ff_layernorm per layer, final_layernorm, an untied lm_head. Each layer registers an AttentionSpec
and a MambaSpec, so the KV manager sees 36 attention + 36 Mamba layers. Every figure is worked by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.model.architecture import Architecture, read_architecture
from engine.model.param_count import decoder_layer_shapes, estimate_params
from engine.plan.kv_cache import kv_bytes_per_token, kv_capacity_for
from tests.plan.model_configs import published_config

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"
GIB = 1024**3


def architecture() -> Architecture:
    return read_architecture(published_config("falcon-h1-0.5b"), CONFIGS)


def test_every_layer_attends_and_keeps_a_state() -> None:
    attention = architecture().attention
    assert attention.layer_kinds == ("full",) * 36
    assert attention.state is not None and attention.state.parallel
    assert attention.description == "GQA 2 KV heads × 64 × 36 layers, each with a MAMBA2 state"
    # mamba2_state_shape: inner mamba_d_ssm 1536 (24 heads × 64), 1 group, state 128: conv_dim 1536 + 256.
    assert attention.state.shapes() == ((3, 1792), (24, 64, 128))
    # 3 · 1792 · 2 = 10,752 + 24 · 64 · 128 · 2 = 393,216 → 403,968 B.
    assert attention.state.page_bytes(2, 2) == 403_968


# h 1024: attention q, o 2 · 1024 · 512 + k, v 2 · 1024 · 128 = 1,310,720; Mamba2 in_proj 1024 · (2 · 1536
# + 2 · 128 + 24) = 3,432,448 + out_proj 1536 · 1024 = 1,572,864 + conv1d 1792 · 4 + bias 1792 + dt_bias, A,
# D 3 · 24 (mamba_rms_norm false: no gated norm) = 5,014,344; MLP 3 · 1024 · 2048 = 6,291,456; norms 2048:
# 12,618,568 per layer. 36 · 12,618,568 + 2 · 32,784 · 1024 + 1024 = 521,411,104 (card: 0.5B).
def test_parameters_config_only() -> None:
    arch = architecture()
    assert estimate_params(arch).total == 521_411_104
    assert {layer.counts().total for layer in decoder_layer_shapes(arch)} == {12_618_568}


# state bytes, block, bytes per block, blocks, blocks per request, tokens, logged concurrency
CAPACITY = [
    # bf16 state: 128 · cdiv(403,968, 128 · 512) = 128 · 7 = 896; 36 attention and 36 Mamba layers, equal
    # counts: 2 groups of 36 (kv_cache_utils: group size = the larger count when under 1.5× the smaller);
    # 896 · 512 · 36 = 16,515,072 B/block; 4 GiB // that = 260; cdiv(8192, 896) = 10 + 3 state pages = 13
    # → 20.00 → 163,840 tokens.
    ((2, 2), 896, 16_515_072, 260, 13, 163_840, "20.00"),
    # float32 temporal state (AVX-512 BF16 hosts): 10,752 + 786,432 = 797,184 → 128 · 13 = 1664;
    # 1664 · 512 · 36 = 30,670,848 → 140 blocks; 5 + 3 = 8 → 17.50 → 143,360.
    ((2, 4), 1664, 30_670_848, 140, 8, 143_360, "17.50"),
]


@pytest.mark.parametrize(
    ("state_bytes", "block", "per_block", "blocks", "per_request", "tokens", "logged"), CAPACITY
)
def test_kv_capacity_counts_both_caches_of_every_layer(
    state_bytes: tuple[int, int],
    block: int,
    per_block: int,
    blocks: int,
    per_request: int,
    tokens: int,
    logged: str,
) -> None:
    attention = architecture().attention
    assert kv_bytes_per_token(attention, 2) == 36 * 2 * 128 * 2  # 18,432: every layer attends
    capacity = kv_capacity_for(attention, 4 * GIB, 8192, 128, 2, 2048, state_bytes=state_bytes)
    assert (capacity.block_size, capacity.bytes_per_block, capacity.num_blocks) == (block, per_block, blocks)
    assert (capacity.blocks_per_request, capacity.tokens, capacity.logged_concurrency) == (
        per_request,
        tokens,
        logged,
    )
    assert [(group.kind, group.layers) for group in capacity.groups] == [("full", 36), ("linear", 36)]


def test_a_real_checkpoints_headers_equal_the_config_estimate(tmp_path: Path) -> None:
    """transformers' own Falcon-H1 (tests/fixtures/tiny_models.py "falcon-h1"), saved: headers = config count.

    h 128: attention 3 · 16,384 = 49,152; Mamba2 in_proj 128 · (2 · 256 + 2 · 64 + 8) = 82,944 + out_proj
    32,768 + conv1d 384 · 4 + bias 384 + 3 · 8 = 117,656; MLP 3 · 128 · 256 = 98,304; norms 256: 265,368
    per layer; 2 · 265,368 + 2 · 2048 · 128 + 128 = 1,055,152.
    """
    import json

    import torch

    from engine.model.inspect_model import inspect_model
    from tests.fixtures.tiny_models import tiny_model

    torch.manual_seed(0)
    tiny_model("falcon-h1").to(torch.bfloat16).save_pretrained(tmp_path)
    from_headers = inspect_model(tmp_path)
    assert (from_headers.params_source, from_headers.params) == ("safetensors", 1_055_152)
    assert from_headers.layer_params == (265_368, 265_368)
    arch = read_architecture(json.loads((tmp_path / "config.json").read_text()), tmp_path)
    assert estimate_params(arch).total == 1_055_152
