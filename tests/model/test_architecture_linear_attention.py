"""Gated DeltaNet hybrids (Qwen3-Next, Qwen3.5) read config-only: layer kinds, recurrent state, parameters.

Configs: tests/fixtures/configs/qwen3-next-80b-a3b-instruct.json (Qwen/Qwen3-Next-80B-A3B-Instruct's
published config.json, which has no ``layer_types``: transformers' Qwen3NextConfig fills it from
``full_attention_interval``) and qwen3.5-9b.json (Qwen/Qwen3.5-9B's, with explicit ``layer_types``
and ``mamba_ssm_dtype``). Every figure is worked by hand in the comments; the state shapes follow
vllm/model_executor/layers/mamba/mamba_utils.py::MambaStateShapeCalculator.gated_delta_net_state_shape.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.model.architecture import Architecture, read_architecture
from engine.model.inspect_model import inspect_model
from engine.model.param_count import active_params, decoder_layer_shapes, estimate_params

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"
NEXT_80B = "qwen3-next-80b-a3b-instruct"
QWEN35_9B = "qwen3.5-9b"


def architecture(name: str) -> Architecture:
    return read_architecture(json.loads((CONFIGS / f"{name}.json").read_text()), CONFIGS)


# name, full layers, linear layers, the UI line
LAYOUTS = [
    # 48 layers, every 4th (3, 7, ..., 47) full: 12 full + 36 linear; no num_nextn_predict_layers in
    # the config, so vLLM's default, 1 MTP layer (tests/model/test_mtp_layers.py).
    (NEXT_80B, 12, 36, "GQA 2 KV heads × 256, layers: 36 linear (GDN) + 12 full (+1 MTP, not loaded)"),
    # 32 layers, layer_types (3 linear + 1 full) × 8; mtp_num_hidden_layers 1.
    (QWEN35_9B, 8, 24, "GQA 4 KV heads × 256, layers: 24 linear (GDN) + 8 full (+1 MTP, not loaded)"),
]


@pytest.mark.parametrize(("name", "full", "linear", "description"), LAYOUTS)
def test_layer_kinds_and_description(name: str, full: int, linear: int, description: str) -> None:
    attention = architecture(name).attention
    assert (attention.count("full"), attention.count("linear")) == (full, linear)
    assert attention.layer_kinds[:4] == ("linear", "linear", "linear", "full")
    assert attention.description == description


# name, TP, (conv shape, temporal shape), page bytes at (conv bf16, temporal bf16), at (bf16, fp32), config ssm dtype
STATES = [
    # conv_dim = 2·16·128 + 32·128 = 8192; conv (4 − 1, 8192), temporal (32, 128, 128).
    # bf16: 3·8192·2 = 49,152 + 32·128·128·2 = 1,048,576 → 1,097,728; fp32 temporal: 49,152 + 2,097,152.
    (NEXT_80B, 1, ((3, 8192), (32, 128, 128)), 1_097_728, 2_146_304, None),
    # TP 2 halves the conv channels and the value heads: 24,576 + 524,288 (bf16).
    (NEXT_80B, 2, ((3, 4096), (16, 128, 128)), 548_864, 1_073_152, None),
    # Same linear-attention shape in Qwen3.5-9B; its config asks for a float32 temporal state.
    (QWEN35_9B, 1, ((3, 8192), (32, 128, 128)), 1_097_728, 2_146_304, "float32"),
]


@pytest.mark.parametrize(("name", "tp", "shapes", "bf16_page", "fp32_page", "ssm_dtype"), STATES)
def test_recurrent_state_shapes_and_pages(
    name: str,
    tp: int,
    shapes: tuple[tuple[int, int], tuple[int, int, int]],
    bf16_page: int,
    fp32_page: int,
    ssm_dtype: str | None,
) -> None:
    state = architecture(name).attention.state
    assert state is not None
    assert state.shapes(tp) == shapes
    assert (state.page_bytes(2, 2, tp), state.page_bytes(2, 4, tp)) == (bf16_page, fp32_page)
    assert state.ssm_dtype == ssm_dtype


def test_models_without_linear_attention_have_no_state() -> None:
    attention = architecture("qwen3-30b-a3b").attention
    assert attention.state is None
    assert attention.count("linear") == 0


# Qwen3-Next-80B-A3B by hand (vLLM's qwen3_next.py modules):
#   GDN layer: in_proj_qkvz 2048·(2·2048 + 2·4096) = 25,165,824 + in_proj_ba 2048·64 = 131,072
#     + out_proj 4096·2048 = 8,388,608 + conv1d 8192·4 = 32,768 + dt_bias 32 + A_log 32 + norm 128
#     = 33,718,464
#   full-attention layer: q_proj (gated) 2048·16·256·2 = 16,777,216 + k, v 2·2048·512 = 2,097,152
#     + o_proj 4096·2048 = 8,388,608 + q/k norm 512 = 27,263,488
#   MoE, every layer: 512 experts · 3·2048·512 = 1,610,612,736 + router 2048·512 = 1,048,576
#     + shared expert 3·2048·512 = 3,145,728 + shared gate 2048 = 1,614,809,088; norms 4096
#   36·33,718,464 + 12·27,263,488 + 48·(1,614,809,088 + 4096) + 2·151,936·2048 + 2048
#     = 79,674,391,296 (card: 80B total); active: − 48·(512 − 10)·3,145,728 = 3,874,929,408 (card: 3B).
# Qwen3.5-9B text by hand: GDN layer 4096·8192 + 4096·4096 + 2·4096·32 + 4096·4096 = 67,371,008
#   + 32,960 vectors; full layer 33,554,432 + 2·4,194,304 + 16,777,216 + 512 = 58,720,768;
#   MLP 3·4096·12288 = 150,994,944; norms 8192; 24·67,403,968 + 8·58,720,768 + 32·151,003,136
#   + 2·248,320·4096 + 4096 = 8,953,803,264.
# Qwen3.5-9B vision by hand (qwen3_5.py builds qwen3_vl.py's Qwen3_VisionTransformer; width 1152, 27 blocks of
#   4304, patch 3·2·16·16 = 1536, merged 4·1152 = 4608, out 4096, no deepstack): patch 1536·1152 = 1,769,472
#   + qkv/proj 4·1152²·27 = 143,327,232 + fc1/fc2 2·1152·4304·27 = 267,743,232 + merger 4608² + 4608·4096
#   = 40,108,032 → 452,947,968 weights; vectors: patch bias 1152 + positions 2304·1152 = 2,654,208
#   + 27·(4·1152 + 4304 + 1152 + 4·1152) = 396,144 + merger biases 4608 + 4096 + its LayerNorm 2304
#   = 3,062,512 → 456,010,480 (vLLM's own tower built on meta: tests/model/test_vision_towers.py).
PARAMS = [
    (NEXT_80B, 79_674_391_296, 0, 3_874_929_408),
    (QWEN35_9B, 9_409_813_744, 456_010_480, 8_953_803_264),
]


@pytest.mark.parametrize(("name", "total", "vision", "active"), PARAMS)
def test_parameter_counts(name: str, total: int | None, vision: int, active: int) -> None:
    arch = architecture(name)
    counts = estimate_params(arch)
    if total is not None:
        assert counts.total == total
    assert counts.vision == vision
    assert active_params(arch) == active


def test_qwen35_total_is_near_the_checkpoint() -> None:
    # model.safetensors.index.json total_size 19,306,216,416 B = 9,653,108,208 bf16 params, of which
    # 243,290,624 are the MTP layer vLLM does not load (tests/model/test_mtp_layers.py): 9,409,817,584 served,
    # 3,840 more than the 9,409,813,744 by hand. Halving the bytes counts a float32 tensor twice, and the
    # 24 GDN layers' A_log (32) and gated norm (128), if stored in float32, are 24·160 = 3,840 parameters.
    assert estimate_params(architecture(QWEN35_9B)).total == pytest.approx(9_409_817_584, rel=1e-6)


# name, layer index, params of that decoder layer (see the sums above)
LAYER_PARAMS = [
    (NEXT_80B, 0, 33_718_464 + 1_614_809_088 + 4096),  # GDN + MoE
    (NEXT_80B, 3, 27_263_488 + 1_614_809_088 + 4096),  # full attention + MoE
    (QWEN35_9B, 0, 67_403_968 + 151_003_136),  # GDN + dense MLP (norms in the MLP figure)
    (QWEN35_9B, 7, 58_720_768 + 151_003_136),
]


@pytest.mark.parametrize(("name", "index", "params"), LAYER_PARAMS)
def test_each_layer_counts_its_own_mixer(name: str, index: int, params: int) -> None:
    assert decoder_layer_shapes(architecture(name))[index].counts().total == params


def test_gdn_projections_are_quantizable_linears() -> None:
    # Linear weights of the 36 GDN layers: 25,165,824 + 131,072 + 8,388,608 = 33,685,504 each.
    shapes = decoder_layer_shapes(architecture(NEXT_80B))[0].linears
    gdn = [shape for shape in shapes if shape.part == "linear_attention"]
    assert sum(shape.numel for shape in gdn) == 33_685_504


def test_inspect_model_reports_the_hybrid_layout(tmp_path: Path) -> None:
    shutil.copy(CONFIGS / f"{NEXT_80B}.json", tmp_path / "config.json")
    model = inspect_model(tmp_path)
    assert model.params == 79_674_391_296
    assert (
        model.attention_summary
        == "GQA 2 KV heads × 256, layers: 36 linear (GDN) + 12 full (+1 MTP, not loaded)"
    )


# family (tests/fixtures/tiny_models.py), total params, each layer's params
TINY_CHECKPOINTS = [
    # hidden 128, vocab 2048, untied. GDN layer: in_proj_qkvz 128·(2·256 + 2·512) = 196,608 + in_proj_ba
    # 128·16 = 2048 + out_proj 512·128 = 65,536 + conv1d 1024·4 = 4096 + dt_bias, A_log 8 + 8 + norm 64
    # = 268,368; full layer q 128·256 (gated) = 32,768 + k, v 2·8192 + o 16,384 + q/k norm 64 = 65,600;
    # MoE 4·3·128·64 + router 512 + shared 3·128·64 + gate 128 = 123,520; norms 256.
    # 3·392,144 + 189,376 + 2·2048·128 + 128 = 1,890,224.
    ("qwen3-next", 1_890_224, (392_144, 392_144, 392_144, 189_376)),
    # Mamba2 layer: in_proj 128·(2·256 + 2·64 + 8) = 82,944 + out_proj 256·128 = 32,768 + conv1d
    # 384·4 + bias 384 + dt_bias, A_log, D 3·8 + norm 256 = 117,912; attention 4·128·128 − 2·128·64
    # = 49,152; MoE 98,304 + router 512 + shared MLP 24,576 = 123,392; norms 256.
    # 3·241,560 + 172,800 + 2·2048·128 + 128 = 1,421,896.
    ("granite-4-h", 1_421_896, (241_560, 241_560, 241_560, 172_800)),
]


@pytest.mark.parametrize(("family", "total", "layers"), TINY_CHECKPOINTS)
def test_a_real_checkpoints_headers_equal_the_config_estimate(
    family: str, total: int, layers: tuple[int, ...], tmp_path: Path
) -> None:
    """transformers' own hybrid model, saved: its safetensors headers hold what the config-only count says."""
    import torch

    from tests.fixtures.tiny_models import tiny_model

    torch.manual_seed(0)
    tiny_model(family).to(torch.bfloat16).save_pretrained(tmp_path)
    from_headers = inspect_model(tmp_path)
    assert from_headers.params_source == "safetensors"
    assert (from_headers.params, from_headers.layer_params) == (total, layers)
    arch = read_architecture(json.loads((tmp_path / "config.json").read_text()), tmp_path)
    assert estimate_params(arch).total == total
    assert tuple(layer.counts().total for layer in decoder_layer_shapes(arch)) == layers


# groups, TP, (conv shape, temporal shape): vLLM's mamba2_state_shape for Granite-4.0-H-style layers
# (8 heads × 32, state 64, kernel 4). One group does not split over 2 ranks: extra_groups_for_head_shards
# raises it to 2, conv_dim = 8·32 + 2·2·64 = 512, halved: 256.
MAMBA2_SHAPES = [
    (1, 1, ((3, 8 * 32 + 2 * 64), (8, 32, 64))),
    (1, 2, ((3, 256), (4, 32, 64))),
    (2, 2, ((3, (256 + 2 * 2 * 64) // 2), (4, 32, 64))),  # 2 groups split evenly: no extension
]


@pytest.mark.parametrize(("groups", "tp", "shapes"), MAMBA2_SHAPES)
def test_mamba2_state_shapes(
    groups: int, tp: int, shapes: tuple[tuple[int, int], tuple[int, int, int]]
) -> None:
    config = {
        "model_type": "granitemoehybrid",
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    config |= {"layer_types": ["mamba", "attention"], "mamba_n_heads": 8, "mamba_d_head": 32}
    config |= {"mamba_n_groups": groups, "mamba_d_state": 64, "mamba_d_conv": 4}
    attention = read_architecture(config, CONFIGS).attention
    assert attention.layer_kinds == ("linear", "full")
    assert attention.state is not None and attention.state.mixer == "mamba2"
    assert attention.state.shapes(tp) == shapes
