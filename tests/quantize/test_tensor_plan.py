"""The data-free planner's tensor choice: what vLLM builds with the quantization config is quantized, the rest kept and ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import QuantTuiError
from engine.quantize.request import QuantizeRequest
from engine.quantize.tensor_plan import QuantizePlan, build_plan
from tests.fixtures.tiny_models import build_tiny_model

# Worked out by hand from vLLM 0.32's module code for the tiny Jamba of tests/fixtures/tiny_models.py
# (4 layers: attention at layer 3, Mamba1 at 0-2; MoE of 4 experts at layers 1 and 3, a dense MLP at 0, 2):
# - models/jamba.py: qkv_proj / o_proj, JambaMLP and the FusedMoE experts get quant_config;
#   JambaMoE.router is a GateLinear without it.
# - layers/mamba/mamba_mixer.py::MambaMixer: conv1d, in_proj, x_proj, dt_proj and out_proj are built
#   without quant_config, so they stay 16-bit and go into the config's ignore.
JAMBA_MAMBA_LAYERS = (0, 1, 2)
JAMBA_QUANTIZED = sorted(
    [
        f"model.layers.{i}.feed_forward.{p}.weight"
        for i in (0, 2)
        for p in ("gate_proj", "up_proj", "down_proj")
    ]
    + [
        f"model.layers.{i}.feed_forward.experts.{e}.{p}.weight"
        for i in (1, 3)
        for e in range(4)
        for p in ("gate_proj", "up_proj", "down_proj")
    ]
    + [f"model.layers.3.self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
)
JAMBA_IGNORED = sorted(
    ["lm_head"]
    + [
        f"model.layers.{i}.mamba.{p}"
        for i in JAMBA_MAMBA_LAYERS
        for p in ("in_proj", "x_proj", "dt_proj", "out_proj", "conv1d")
    ]
    + [f"model.layers.{i}.feed_forward.router" for i in (1, 3)]
)
# Qwen2-MoE (models/qwen2_moe.py): the router ``mlp.gate`` and ``mlp.shared_expert_gate`` are
# ReplicatedLinear/GateLinear with quant_config=None; attention, experts and the shared expert are quantized.
QWEN2_MOE_QUANTIZED = sorted(
    [
        f"model.layers.{i}.self_attn.{p}.weight"
        for i in (0, 1)
        for p in ("q_proj", "k_proj", "v_proj", "o_proj")
    ]
    + [
        f"model.layers.{i}.mlp.experts.{e}.{p}.weight"
        for i in (0, 1)
        for e in range(4)
        for p in ("gate_proj", "up_proj", "down_proj")
    ]
    + [
        f"model.layers.{i}.mlp.shared_expert.{p}.weight"
        for i in (0, 1)
        for p in ("gate_proj", "up_proj", "down_proj")
    ]
)
QWEN2_MOE_IGNORED = sorted(
    ["lm_head"] + [f"model.layers.{i}.mlp.{g}" for i in (0, 1) for g in ("gate", "shared_expert_gate")]
)
# Nemotron-H "M-M*" (models/nemotron_h.py): MambaMixer2's in_proj / out_proj, the MLP's up / down and the
# attention take quant_config; mamba_mixer2.py builds conv1d with quant_config=None.
NEMOTRON_H_QUANTIZED = sorted(
    [f"backbone.layers.{i}.mixer.{p}.weight" for i in (0, 2) for p in ("in_proj", "out_proj")]
    + [f"backbone.layers.1.mixer.{p}.weight" for p in ("up_proj", "down_proj")]
    + [f"backbone.layers.3.mixer.{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
)
NEMOTRON_H_IGNORED = sorted(["lm_head"] + [f"backbone.layers.{i}.mixer.conv1d" for i in (0, 2)])
# Falcon-H1 (models/falcon_h1.py): each layer's attention, Mamba2 mixer (its ``mamba.in_proj`` /
# ``mamba.out_proj``: MambaMixer2 with quant_config) and gated MLP are quantized; conv1d is not.
FALCON_H1_QUANTIZED = sorted(
    f"model.layers.{i}.{p}.weight"
    for i in (0, 1)
    for p in (
        *(f"self_attn.{q}" for q in ("q_proj", "k_proj", "v_proj", "o_proj")),
        "mamba.in_proj",
        "mamba.out_proj",
        *(f"feed_forward.{q}" for q in ("gate_proj", "up_proj", "down_proj")),
    )
)
FALCON_H1_IGNORED = sorted(["lm_head"] + [f"model.layers.{i}.mamba.conv1d" for i in (0, 1)])
# LFM2 (models/lfm2.py, layers/mamba/short_conv.py): ShortConv's in_proj / out_proj, the attention's q/k/v
# (qkv_proj) and out_proj and the MLP's w1/w3 (w13) and w2 take quant_config; the conv (``conv.conv``, a
# 3-D depthwise weight) does not. Conv layers 0, 1, 3; attention layer 2.
LFM2_CONV_LAYERS = (0, 1, 3)
LFM2_MIXERS = [
    f"model.layers.{i}.conv.{p}.weight" for i in LFM2_CONV_LAYERS for p in ("in_proj", "out_proj")
] + [f"model.layers.2.self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "out_proj")]
LFM2_QUANTIZED = sorted(
    LFM2_MIXERS + [f"model.layers.{i}.feed_forward.{p}.weight" for i in range(4) for p in ("w1", "w2", "w3")]
)
LFM2_IGNORED = sorted(["lm_head"] + [f"model.layers.{i}.conv.conv" for i in LFM2_CONV_LAYERS])
# LFM2-MoE (models/lfm2_moe.py): the same mixers; layer 0's dense MLP and the experts of layers 1-3 take
# quant_config. Its router (a GateLinear) takes it too, but is kept 16-bit and ignored as every router is.
LFM2_MOE_QUANTIZED = sorted(
    LFM2_MIXERS
    + [f"model.layers.0.feed_forward.{p}.weight" for p in ("w1", "w2", "w3")]
    + [
        f"model.layers.{i}.feed_forward.experts.{e}.{p}.weight"
        for i in (1, 2, 3)
        for e in range(4)
        for p in ("w1", "w2", "w3")
    ]
)
LFM2_MOE_IGNORED = sorted(LFM2_IGNORED + [f"model.layers.{i}.feed_forward.gate" for i in (1, 2, 3)])
CASES = {
    "jamba": (JAMBA_QUANTIZED, JAMBA_IGNORED),
    "nemotron-h": (NEMOTRON_H_QUANTIZED, NEMOTRON_H_IGNORED),
    "falcon-h1": (FALCON_H1_QUANTIZED, FALCON_H1_IGNORED),
    "qwen2-moe-shared": (QWEN2_MOE_QUANTIZED, QWEN2_MOE_IGNORED),
    "lfm2": (LFM2_QUANTIZED, LFM2_IGNORED),
    "lfm2-moe": (LFM2_MOE_QUANTIZED, LFM2_MOE_IGNORED),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    tokenizer = Path(__file__).parent  # no tokenizer files: the planner reads headers only
    return {family: build_tiny_model(family, root / family, tokenizer) for family in CASES}


def _plan(source: Path, method: str, tmp_path: Path, ignore: tuple[str, ...] = ()) -> QuantizePlan:
    return build_plan(QuantizeRequest(source, method, output=tmp_path / "out", ignore=ignore))


@pytest.mark.parametrize("method", ["int8-w8a8", "fp8", "w4a16"])
@pytest.mark.parametrize("family", sorted(CASES))
def test_quantized_and_ignored_follow_what_vllm_builds_with_the_quantization_config(
    sources: dict[str, Path], tmp_path: Path, family: str, method: str
) -> None:
    quantized, ignored = CASES[family]
    plan = _plan(sources[family], method, tmp_path)
    assert sorted(tensor.name for tensor in plan.tensors if tensor.action == "quantize") == quantized
    assert list(plan.unquantized_linear) == ignored


def test_jamba_mamba_weights_are_copied_as_they_are(sources: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(sources["jamba"], "w4a16", tmp_path)
    copied = {tensor.name: tensor for tensor in plan.tensors if tensor.action == "copy"}
    # dt_proj has 8 inputs (mamba_dt_rank): group-128 W4A16 could not take it, and need not.
    for name, shape in (
        ("model.layers.0.mamba.dt_proj.weight", (256, 8)),
        ("model.layers.0.mamba.x_proj.weight", (40, 256)),
        ("model.layers.2.mamba.in_proj.weight", (512, 128)),
        ("model.layers.1.mamba.conv1d.weight", (256, 1, 4)),
    ):
        assert copied[name].shape == shape
        assert copied[name].outputs[0].dtype == "BF16"


def test_user_ignore_adds_to_the_kept_layers(sources: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(sources["jamba"], "int8-w8a8", tmp_path, ignore=("model.layers.3.self_attn.q_proj",))
    # q_proj is fused with k_proj and v_proj in vLLM's qkv_proj: all three stay 16-bit.
    attention = [f"model.layers.3.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")]
    assert list(plan.unquantized_linear) == sorted([*JAMBA_IGNORED, *attention])


def test_mamba_projections_are_not_user_ignorable_linears(sources: dict[str, Path], tmp_path: Path) -> None:
    # They are no quantizable Linear, so a pattern that names only them matches nothing.
    with pytest.raises(QuantTuiError, match="matches no Linear layer"):
        _plan(sources["jamba"], "int8-w8a8", tmp_path, ignore=("*.mamba.x_proj",))


def test_nemotron_h_moe_layers_are_refused_in_one_line(tmp_path: Path) -> None:
    source = build_tiny_model(
        "nemotron-h", tmp_path / "nemotron-h-moe", tmp_path, hybrid_override_pattern="ME"
    )
    with pytest.raises(QuantTuiError, match="Nemotron-H MoE layers") as refused:
        _plan(source, "int8-w8a8", tmp_path)
    assert "\n" not in str(refused.value)
