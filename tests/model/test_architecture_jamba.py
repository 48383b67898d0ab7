"""Jamba (jamba) read config-only: attention / Mamba1 layers by period and offset, MoE layers, Mamba1 state, parameters.

Config: tests/fixtures/configs/ai21-jamba-1.5-mini.json (ai21labs/AI21-Jamba-1.5-Mini, see its README).
transformers' JambaConfig: layer i is attention where ``i % attn_layer_period == attn_layer_offset``,
Mamba elsewhere, and MoE where ``i % expert_layer_period == expert_layer_offset``. vLLM's jamba.py:
a MambaMixer (Mamba1) or attention (qkv_proj, o_proj, no bias), then a gated MLP (JambaMLP) or JambaMoE
(router without bias, experts as wide as intermediate_size); input_layernorm and pre_ff_layernorm per
layer, final_layernorm, an untied lm_head. The Mamba1 state follows
vllm/model_executor/layers/mamba/mamba_utils.py::MambaStateShapeCalculator.mamba1_state_shape.
Every figure is worked by hand in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.model.architecture import Architecture, read_architecture
from engine.model.inspect_model import inspect_model
from engine.model.param_count import active_params, decoder_layer_shapes, estimate_params
from tests.plan.model_configs import published_config

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"
MINI = "ai21-jamba-1.5-mini"


def architecture(name: str = MINI) -> Architecture:
    return read_architecture(published_config(name), CONFIGS)


def test_layers_by_period_and_offset() -> None:
    arch = architecture()
    attention = arch.attention
    # attn_layer_period 8, offset 4: layers 4, 12, 20, 28 attend; the other 28 are Mamba1.
    assert [i for i, kind in enumerate(attention.layer_kinds) if kind == "full"] == [4, 12, 20, 28]
    assert attention.count("linear") == 28
    assert attention.description == "GQA 8 KV heads × 128, layers: 28 linear (MAMBA1) + 4 full"
    # expert_layer_period 2, offset 1: the 16 odd layers route to 16 experts (2 per token).
    assert arch.moe is not None
    assert arch.moe.moe_layers == tuple(range(1, 32, 2))
    assert (arch.moe.num_experts, arch.moe.experts_per_token, arch.moe.expert_intermediate_size) == (
        16,
        2,
        14_336,
    )


# TP, (conv shape, temporal shape), page bytes with a bf16 state, with a float32 temporal state
STATES = [
    # inner = mamba_expand 2 · 4096 = 8192: conv (4 − 1, 8192), temporal (8192, 16).
    # 3 · 8192 · 2 = 49,152 + 8192 · 16 · 2 = 262,144 → 311,296; float32: 49,152 + 524,288 = 573,440.
    (1, ((3, 8192), (8192, 16)), 311_296, 573_440),
    # TP 2 halves the inner channels: 24,576 + 131,072 = 155,648; float32 24,576 + 262,144.
    (2, ((3, 4096), (4096, 16)), 155_648, 286_720),
]


@pytest.mark.parametrize(("tp", "shapes", "bf16_page", "fp32_page"), STATES)
def test_mamba1_state(
    tp: int, shapes: tuple[tuple[int, int], tuple[int, ...]], bf16_page: int, fp32_page: int
) -> None:
    state = architecture().attention.state
    assert state is not None and state.mixer == "mamba1"
    assert state.ssm_dtype is None  # mamba1_state_dtype: "auto", the model dtype
    assert state.checkpoint_pages == 0  # MambaMixer has no prefill checkpoint (MambaMixer2 has)
    assert state.shapes(tp) == shapes
    assert (state.page_bytes(2, 2, tp), state.page_bytes(2, 4, tp)) == (bf16_page, fp32_page)


# Jamba-1.5-Mini by hand (h 4096, inner 8192, state 16, dt rank 256):
#   Mamba1: in_proj 4096 · 16,384 = 67,108,864 + x_proj 8192 · (256 + 32) = 2,359,296 + dt_proj 256 · 8192
#     = 2,097,152 + its bias 8192 + out_proj 8192 · 4096 = 33,554,432 + conv1d 8192 · 4 + bias 8192 = 40,960
#     + A 8192 · 16 = 131,072 + D 8192 + dt/B/C norms 256 + 16 + 16 = 105,308,448
#   attention: q, o 2 · 4096² + k, v 2 · 4096 · 1024 = 41,943,040
#   MLP 3 · 4096 · 14,336 = 176,160,768; MoE 16 · 176,160,768 + router 4096 · 16 = 2,818,637,824; norms 8192
#   28 · 105,308,448 + 4 · 41,943,040 + 16 · 176,160,768 + 16 · 2,818,637,824 + 32 · 8192
#   + 2 · 65,536 · 4096 + 4096 = 51,570,323,328 (card: 52B total);
#   active: − 16 · (16 − 2) · 176,160,768 = 12,110,311,296 (card: 12B active).
# Layers: 0 Mamba + MLP 281,477,408; 1 Mamba + MoE 2,923,954,464; 4 attention + MLP 218,112,000.
def test_parameters_config_only() -> None:
    arch = architecture()
    assert estimate_params(arch).total == 51_570_323_328
    assert active_params(arch) == 12_110_311_296
    layers = [layer.counts().total for layer in decoder_layer_shapes(arch)]
    assert (layers[0], layers[1], layers[4]) == (281_477_408, 2_923_954_464, 218_112_000)


def test_mamba1_projections_are_not_quantizable() -> None:
    # vLLM's MambaMixer builds in_proj, x_proj, dt_proj and out_proj without the quantization config: they
    # stay 16-bit. Quantizable: attention 4 · 41,943,040 + MLP 16 · 176,160,768 + experts 16 · 16 ·
    # 176,160,768 = 48,083,501,056; the 28 Mamba1 layers keep 28 · (67,108,864 + 2,359,296 + 2,097,152
    # + 33,554,432) = 2,943,352,832 Linear weights unquantized.
    counts = estimate_params(architecture())
    assert counts.linear == 48_083_501_056
    mamba = [s for s in decoder_layer_shapes(architecture())[0].linears if s.module.startswith("mamba.")]
    assert {s.part for s in mamba} == {"unquantized"}
    assert 28 * sum(s.numel for s in mamba) == 2_943_352_832


def test_jamba_defaults_when_the_file_is_silent() -> None:
    # JambaConfig's defaults: attention period 8 / offset 4, experts period 2 / offset 1, dt rank "auto"
    # = ceil(4096 / 16) = 256: the same model as the full file.
    config = published_config(MINI)
    for key in ("attn_layer_period", "attn_layer_offset", "expert_layer_period", "expert_layer_offset"):
        del config[key]
    config["mamba_dt_rank"] = "auto"
    arch = read_architecture(config, CONFIGS)
    assert arch.attention.layer_kinds == architecture().attention.layer_kinds
    assert estimate_params(arch).total == 51_570_323_328


def test_offset_zero_is_an_offset() -> None:
    config = published_config(MINI) | {"attn_layer_offset": 0, "expert_layer_offset": 0}
    arch = read_architecture(config, CONFIGS)
    assert [i for i, kind in enumerate(arch.attention.layer_kinds) if kind == "full"] == [0, 8, 16, 24]
    assert arch.moe is not None and arch.moe.moe_layers[:2] == (0, 2)


def test_a_real_checkpoints_headers_equal_the_config_estimate(tmp_path: Path) -> None:
    """transformers' own Jamba (tests/fixtures/tiny_models.py "jamba"), saved: headers = the config-only count.

    h 128, inner 256, state 16, dt rank 8. Mamba1: in_proj 128 · 512 = 65,536 + x_proj 256 · 40 = 10,240
    + dt_proj 2048 + 256 + out_proj 32,768 + conv1d 1024 + 256 + A 4096 + D 256 + norms 40 = 116,520; MLP
    3 · 128 · 256 = 98,304; MoE 4 · 98,304 + router 512 = 393,728; attention 3 · 16,384 = 49,152; norms 256.
    Layers 0, 2: 215,080; 1: 510,504; 3: 443,136; + 2 · 2048 · 128 + 128 = 1,908,216.
    """
    import torch

    from tests.fixtures.tiny_models import tiny_model

    torch.manual_seed(0)
    tiny_model("jamba").to(torch.bfloat16).save_pretrained(tmp_path)
    layers = (215_080, 510_504, 215_080, 443_136)
    from_headers = inspect_model(tmp_path)
    assert (from_headers.params_source, from_headers.params) == ("safetensors", 1_908_216)
    assert from_headers.layer_params == layers
    # Linear weights a quantizer may take: not the Mamba1 projections (3 · 110,592 of them); attention
    # 49,152 + MLPs 2 · 98,304 + experts 2 · 393,216 = 1,032,192.
    assert from_headers.linear_params == 1_032_192
    arch = read_architecture(json.loads((tmp_path / "config.json").read_text()), tmp_path)
    assert estimate_params(arch).total == 1_908_216
    assert tuple(layer.counts().total for layer in decoder_layer_shapes(arch)) == layers
