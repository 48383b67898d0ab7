"""Nemotron-H (nemotron_h) read config-only: layer kinds from hybrid_override_pattern, Mamba2 state, parameters.

Configs (tests/fixtures/configs, see its README): nvidia/Nemotron-H-8B-Base-8K, nvidia/NVIDIA-Nemotron-
Nano-9B-v2 and nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16. vLLM's nemotron_h.py builds one mixer per
decoder layer: M a MambaMixer2, * attention (qkv_proj, o_proj, no bias), - an MLP-only layer
(NemotronHMLP: up_proj, relu2, down_proj; no gate), E an MoE-only layer (NemotronHMoE: router + its
e_score_correction_bias, non-gated experts, one shared MLP); each layer has one RMSNorm, the model a
final norm_f and an untied lm_head. Only M and * layers own a cache (a MambaSpec or an AttentionSpec).
Every figure is worked by hand in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.model.architecture import Architecture, read_architecture
from engine.model.inspect_model import inspect_model
from engine.model.param_count import active_params, decoder_layer_shapes, estimate_params
from tests.plan.model_configs import published_config, write_config

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"
H_8B = "nemotron-h-8b-base-8k"
NANO_9B = "nvidia-nemotron-nano-9b-v2"
NANO_30B = "nemotron-3-nano-30b-a3b"


def architecture(name: str) -> Architecture:
    return read_architecture(published_config(name), CONFIGS)


# name, Mamba2 layers, attention layers, layers without cache (MLP / MoE), the UI line
LAYOUTS = [
    # "M-M-M-M*-M-M-M-M-M*-…": 24 M, 4 *, 24 -.
    (H_8B, 24, 4, 24, "GQA 8 KV heads × 128, layers: 24 linear (MAMBA2) + 24 without cache + 4 full"),
    # "M-M-M-MM-M-M-M*-…": 27 M, 4 *, 25 -.
    (NANO_9B, 27, 4, 25, "GQA 8 KV heads × 128, layers: 27 linear (MAMBA2) + 25 without cache + 4 full"),
    # "MEMEM*EMEMEM*…": 23 M, 6 *, 23 E.
    (NANO_30B, 23, 6, 23, "GQA 2 KV heads × 128, layers: 23 linear (MAMBA2) + 23 without cache + 6 full"),
]


@pytest.mark.parametrize(("name", "mamba", "full", "none", "description"), LAYOUTS)
def test_layer_kinds_follow_the_pattern(
    name: str, mamba: int, full: int, none: int, description: str
) -> None:
    attention = architecture(name).attention
    assert (attention.count("linear"), attention.count("full"), attention.count("none")) == (
        mamba,
        full,
        none,
    )
    pattern = published_config(name)["hybrid_override_pattern"]
    letters = {"linear": "M", "full": "*", "none": "-E"}
    assert all(pattern[i] in letters[kind] for i, kind in enumerate(attention.layer_kinds))
    assert attention.description == description


# the names a layer list spells M and * with: transformers 5's, and the legacy ones some files carry
NAMES = [
    {"M": "linear_attention", "*": "full_attention", "-": "mlp", "E": "moe"},
    {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"},
]


@pytest.mark.parametrize("names", NAMES)
def test_transformers_5_layer_list_reads_like_the_pattern(names: dict[str, str]) -> None:
    # transformers' NemotronHConfig saves layers_block_type and no num_hidden_layers.
    config = published_config(NANO_30B)
    pattern = config.pop("hybrid_override_pattern")
    del config["num_hidden_layers"]
    config["layers_block_type"] = [names[letter] for letter in pattern]
    arch = read_architecture(config, CONFIGS)
    assert arch.num_layers == 52
    assert arch.attention.layer_kinds == architecture(NANO_30B).attention.layer_kinds
    assert arch.moe is not None and len(arch.moe.moe_layers) == 23


# name, TP, (conv shape, temporal shape), page bytes (conv bf16 + temporal float32)
STATES = [
    # MambaMixer2: inner = 128 heads · 64 = 8192; conv_dim = 8192 + 2 · 8 groups · 128 = 10,240.
    # 3 · 10,240 · 2 = 61,440 + 128 · 64 · 128 · 4 = 4,194,304 → 4,255,744.
    (H_8B, 1, ((3, 10_240), (128, 64, 128)), 4_255_744),
    # inner 128 · 80 = 10,240; conv_dim 12,288: 73,728 + 128 · 80 · 128 · 4 = 5,242,880 → 5,316,608.
    (NANO_9B, 1, ((3, 12_288), (128, 80, 128)), 5_316_608),
    # TP 2: 8 groups split evenly; conv (3, 6144), 64 heads: 36,864 + 2,621,440 = 2,658,304.
    (NANO_9B, 2, ((3, 6144), (64, 80, 128)), 2_658_304),
    # TP 16: 8 groups do not split over 16 ranks: extra_groups_for_head_shards raises them to 16,
    # conv_dim 10,240 + 2 · 16 · 128 = 14,336, /16 = 896; 8 heads: 5376 + 327,680 = 333,056.
    (NANO_9B, 16, ((3, 896), (8, 80, 128)), 333_056),
    # inner 64 · 64 = 4096; conv_dim 6144: 36,864 + 64 · 64 · 128 · 4 = 2,097,152 → 2,134,016.
    (NANO_30B, 1, ((3, 6144), (64, 64, 128)), 2_134_016),
]


@pytest.mark.parametrize(("name", "tp", "shapes", "page"), STATES)
def test_mamba2_state_as_vllm_sizes_it(
    name: str, tp: int, shapes: tuple[tuple[int, int], tuple[int, ...]], page: int
) -> None:
    state = architecture(name).attention.state
    assert state is not None and state.mixer == "mamba2"
    # NemotronHForCausalLMConfig.update_mamba_ssm_cache_dtype: the config's value, float32 when unset.
    assert state.ssm_dtype == "float32"
    assert state.shapes(tp) == shapes
    assert state.page_bytes(2, 4, tp) == page


def test_head_dim_is_the_config_class_default() -> None:
    # A Nemotron-H-4B-style file: hidden 3072, 32 heads, attention_head_dim 128, no head_dim. vLLM takes
    # NemotronHConfig.head_dim (128), not 3072 / 32 = 96: 8 KV heads · 256 · 2 B = 4096 B/token/layer.
    config = published_config(H_8B) | {"hidden_size": 3072}
    arch = read_architecture(config, CONFIGS)
    assert arch.head_dim == 128
    assert arch.attention.bytes_per_token_per_layer(2) == 4096


def test_a_configured_ssm_dtype_is_kept() -> None:
    config = published_config(H_8B) | {"mamba_ssm_cache_dtype": "bfloat16"}
    state = read_architecture(config, CONFIGS).attention.state
    assert state is not None and state.ssm_dtype == "bfloat16"


# Hand counts, per layer kind (h hidden, one RMSNorm h per layer):
# Nemotron-H-8B (h 4096): M: in_proj 4096 · (2 · 8192 + 2 · 1024 + 128) = 76,021,760 + out_proj 8192 · 4096
#   = 33,554,432 + conv1d 10,240 · 4 + bias 10,240 = 51,200 + dt_bias, A, D 3 · 128 + norm 8192 + 4096
#   = 109,640,064; *: q 4096² + k, v 2 · 4096 · 1024 + o 4096² + 4096 = 41,947,136; -: up, down 2 · 4096 ·
#   21,504 + 4096 = 176,164,864. 24 · 109,640,064 + 4 · 41,947,136 + 24 · 176,164,864 + embed, lm_head
#   2 · 131,072 · 4096 + norm_f 4096 = 8,100,852,736 (card: 8B).
# Nano-9B-v2 (h 4480): M: 4480 · (2 · 10,240 + 2048 + 128) + 10,240 · 4480 + 12,288 · 5 + 384 + 10,240
#   + 4480 = 147,450,624; *: 4480 · 5120 · 2 + 2 · 4480 · 1024 + 4480 = 55,054,720; -: 2 · 4480 · 15,680
#   + 4480 = 140,497,280. 27 · M + 4 · * + 25 · - + 2 · 131,072 · 4480 + 4480 = 8,888,227,328 (card: 9B).
# Nano-30B-A3B (h 2688): M: 2688 · (2 · 4096 + 2048 + 64) + 4096 · 2688 + 6144 · 5 + 192 + 4096 + 2688
#   = 38,744,896; *: 2688 · 4096 · 2 + 2 · 2688 · 256 + 2688 = 23,399,040; E: 128 experts · 2 · 2688 · 1856
#   + router 2688 · 128 + bias 128 + shared 2 · 2688 · 3712 + 2688 = 1,297,468,160.
#   23 · M + 6 · * + 23 · E + 2 · 131,072 · 2688 + 2688 = 31,577,940,288 (card: 31.6B total);
#   active: − 23 · (128 − 6) · 2 · 2688 · 1856 = 3,580,076,352, of which 704,643,072 are the embedding and
#   lm_head: 2.88B in the layers (the name's A3B).
PARAMS = [
    (H_8B, 8_100_852_736, 8_100_852_736, (109_640_064, 176_164_864, 109_640_064)),
    (NANO_9B, 8_888_227_328, 8_888_227_328, (147_450_624, 140_497_280, 147_450_624)),
    (NANO_30B, 31_577_940_288, 3_580_076_352, (38_744_896, 1_297_468_160, 38_744_896)),
]


@pytest.mark.parametrize(("name", "total", "active", "first_layers"), PARAMS)
def test_parameters_config_only(name: str, total: int, active: int, first_layers: tuple[int, ...]) -> None:
    arch = architecture(name)
    assert estimate_params(arch).total == total
    assert active_params(arch) == active
    layers = decoder_layer_shapes(arch)
    assert len(layers) == arch.num_layers
    assert tuple(layer.counts().total for layer in layers[:3]) == first_layers
    assert sum(layer.counts().total for layer in layers) == total - 2 * arch.vocab_size * arch.hidden_size - (
        arch.hidden_size
    )


def test_nano_30b_moe_layout() -> None:
    moe = architecture(NANO_30B).moe
    assert moe is not None
    assert (moe.num_experts, moe.experts_per_token, moe.expert_intermediate_size) == (128, 6, 1856)
    assert moe.shared_intermediate_size == 3712  # moe_shared_expert_intermediate_size × n_shared_experts 1
    assert moe.moe_layers[:3] == (1, 3, 6)  # "MEMEM*E…"


def test_dense_nemotron_h_has_no_experts() -> None:
    # Nemotron-H-8B's file has no n_routed_experts; NemotronHConfig's default 8 is unused without "E".
    assert architecture(H_8B).moe is None
    assert architecture(H_8B).num_experts is None


def test_inspect_model_config_only(tmp_path: Path) -> None:
    model = inspect_model(write_config(tmp_path, NANO_9B))
    assert (model.params, model.params_source) == (8_888_227_328, "estimate")
    assert model.attention_summary.startswith("GQA 8 KV heads × 128, layers: 27 linear (MAMBA2)")


# pattern, total params, each layer's params. tests/fixtures/tiny_models.py "nemotron-h": h 128, vocab 2048,
# untied. M: in_proj 128 · (2 · 256 + 2 · 64 + 8) = 82,944 + out_proj 256 · 128 = 32,768 + conv1d 384 · 4
# + bias 384 + 3 · 8 + norm 256 + 128 = 118,040; -: 2 · 128 · 256 + 128 = 65,664; *: 128 · 128 · 2
# + 2 · 128 · 64 + 128 = 49,280; E: 4 · 2 · 128 · 64 + router 512 + bias 4 + shared 2 · 128 · 64 + 128
# = 82,564. Embedding + lm_head 2 · 2048 · 128 = 524,288, norm_f 128.
TINY = [
    ("M-M*", 875_440, (118_040, 65_664, 118_040, 49_280)),
    ("M-*E", 839_964, (118_040, 65_664, 49_280, 82_564)),
]


@pytest.mark.parametrize(("pattern", "total", "layers"), TINY)
def test_a_real_checkpoints_headers_equal_the_config_estimate(
    pattern: str, total: int, layers: tuple[int, ...], tmp_path: Path
) -> None:
    """transformers' own Nemotron-H, saved: its safetensors headers hold what the config-only count says."""
    import torch

    from tests.fixtures.tiny_models import tiny_model

    torch.manual_seed(0)
    tiny_model("nemotron-h", hybrid_override_pattern=pattern).to(torch.bfloat16).save_pretrained(tmp_path)
    from_headers = inspect_model(tmp_path)
    assert from_headers.params_source == "safetensors"
    assert (from_headers.params, from_headers.layer_params) == (total, layers)
    assert not from_headers.tie_word_embeddings
    arch = read_architecture(json.loads((tmp_path / "config.json").read_text()), tmp_path)
    assert estimate_params(arch).total == total
    assert tuple(layer.counts().total for layer in decoder_layer_shapes(arch)) == layers
