"""A ModelOpt MIXED_PRECISION checkpoint's vision tower: 16-bit unless quantized_layers names it, as vLLM 0.32 builds it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.plan.model_configs import model_from_config

# LLaVA (tests/fixtures/configs/llava-mistral-7b.json) by hand. Decoder: Mistral-7B, h 4,096, 32 layers, every
# layer's gate/up/down NVFP4 (group 16), attention unlisted (16-bit):
#   attention 4,096² + 2 × 1,024 × 4,096 + 4,096² = 41,943,040 × 2 B = 83,886,080 B
#   MLP 3 × 14,336 × 4,096 = 176,160,768: 88,080,384 B + a scale per 16 11,010,048 B + 3 × 8 = 99,090,456 B
#   norms 16,384 B → 182,992,920 B a layer, 5,855,773,440 B for 32;
#   embed_tokens and the (unlisted) lm_head 32,000 × 4,096 × 2 B = 262,144,000 B each, final norm 8,192 B.
# Vision (CLIP-L/14-336: h 1,024, 24 layers, MLP 4,096, patch 14, image 336). LLaVA's vision_feature_layer -2:
# vLLM's clip.py builds 24 - 2 + 1 = 23 layers and no post_layernorm (llava.py: require_post_norm=False):
#   q/k/v/out 92 × 1,024² = 96,468,992, fc1 and fc2 23 × 1,024 × 4,096 = 96,468,992 each (138 matrices,
#   289,406,976 = 578,813,952 B at 16 bits);
#   patch embedding 588 × 1,024 = 602,112 (a Conv2dLayer in vLLM's clip.py: never quantized) = 1,204,224 B;
#   projector linear_1 1,024 × 4,096 = 4,194,304 and linear_2 4,096² = 16,777,216 (= 41,943,040 B at 16 bits);
#   vectors: 23 blocks × (q/k/v/out biases 4,096 + fc1 4,096 + fc2 1,024 + two LayerNorms 4,096) = 306,176,
#   class embedding 1,024, positions (24² + 1) × 1,024 = 590,848, pre_layrnorm 2,048, projector biases 8,192:
#   908,288 = 1,816,576 B.
DECODER, VOCAB_AND_NORM = 32 * 182_992_920, 2 * 262_144_000 + 8_192
TOWER_16, PATCH, PROJECTOR_16, VISION_VECTORS = 578_813_952, 1_204_224, 41_943_040, 1_816_576
TOWER_MODULES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
    "mlp.fc1",
    "mlp.fc2",
)


def _layers(tower_layers: int, projector: bool) -> dict[str, dict[str, Any]]:
    layers: dict[str, dict[str, Any]] = {
        f"language_model.model.layers.{i}.mlp.{name}": {"quant_algo": "NVFP4", "group_size": 16}
        for i in range(32)
        for name in ("gate_proj", "up_proj", "down_proj")
    }
    for i in range(tower_layers):
        layers |= {
            f"vision_tower.vision_model.encoder.layers.{i}.{m}": {"quant_algo": "FP8"} for m in TOWER_MODULES
        }
    if projector:
        layers |= {f"multi_modal_projector.linear_{n}": {"quant_algo": "FP8"} for n in (1, 2)}
    return layers


VISION_CASES = [
    # Nothing in the tower listed: all 16-bit (_resolve_quant_algo None -> UnquantizedLinearMethod).
    (0, False, TOWER_16 + PATCH + PROJECTOR_16 + VISION_VECTORS),
    # The whole tower FP8 (KFp8StaticTensor): 289,406,976 B + 138 × 8 B of scales = 289,408,080 B.
    (23, False, 289_408_080 + PATCH + PROJECTOR_16 + VISION_VECTORS),
    # ... all 24 checkpoint layers listed: the one vLLM does not build changes nothing.
    (24, False, 289_408_080 + PATCH + PROJECTOR_16 + VISION_VECTORS),
    # ... and the projector FP8: 4,194,304 + 8 + 16,777,216 + 8 = 20,971,536 B.
    (23, True, 289_408_080 + PATCH + 20_971_536 + VISION_VECTORS),
    # Layers 0-11 listed (72 of 138 matrices): 12 layers FP8 (150,994,944 + 576 B), 11 16-bit (276,824,064 B).
    (12, False, 150_994_944 + 576 + 276_824_064 + PATCH + PROJECTOR_16 + VISION_VECTORS),
]


@pytest.mark.parametrize(("tower_layers", "projector", "vision_bytes"), VISION_CASES)
def test_vision_layers_take_their_listed_algo_and_stay_16_bit_unlisted(
    tmp_path: Path, tower_layers: int, projector: bool, vision_bytes: int
) -> None:
    quant = {
        "quant_method": "modelopt",
        "quant_algo": "MIXED_PRECISION",
        "ignore": ["lm_head"],
        "quantized_layers": _layers(tower_layers, projector),
    }
    model = model_from_config(tmp_path, "llava-mistral-7b", {"quantization_config": quant})
    # The decoder's attention stays 16-bit: a vision block's self_attn names are not the decoder's (they had
    # made quant-tui count the decoder's unlisted attention FP8, 1,342,176,256 B short).
    assert model.layer_bytes == (182_992_920,) * 32
    assert model.loaded_weight_bytes == DECODER + VOCAB_AND_NORM + vision_bytes


# vLLM 0.32's ModelOptMixedPrecisionConfig on the same names: a listed vision prefix resolves to its algo (no
# vision_tower exception, unlike ModelOptQuantConfigBase.get_quant_method), an unlisted one to None (16-bit).
RESOLVE_CASES = [
    ("vision_tower.vision_model.encoder.layers.0.self_attn.q_proj", "FP8"),
    ("vision_tower.vision_model.encoder.layers.12.mlp.fc1", None),
    ("multi_modal_projector.linear_1", None),
    ("language_model.model.layers.0.self_attn.o_proj", None),
    ("language_model.model.layers.0.mlp.down_proj", "NVFP4"),
]


@pytest.mark.parametrize(("prefix", "algo"), RESOLVE_CASES)
def test_vllm_resolves_the_vision_names_the_same_way(prefix: str, algo: str | None) -> None:
    from vllm.model_executor.layers.quantization import modelopt

    quant = {
        "quant_method": "modelopt",
        "quant_algo": "MIXED_PRECISION",
        "quantized_layers": _layers(12, False),
    }
    config = modelopt.ModelOptMixedPrecisionConfig.from_config(copy.deepcopy(quant))
    assert config._resolve_quant_algo(prefix) == algo


# One-algo ModelOpt FP8 (ModelOptQuantConfigBase.get_quant_method) on the same LLaVA: every decoder Linear FP8,
# 218,103,808 + 7 × 8 + 16,384 = 218,120,248 B a layer (6,979,847,936 for 32); the tower stays 16-bit (its
# vision_tower prefix is kept unquantized whatever the exclude list says); multi_modal_projector is built with the
# quant config (llava.py) and quantized unless excluded: FP8 20,971,536 B, 16-bit 41,943,040.
FP8_DECODER = 32 * 218_120_248
FP8_CASES = [
    (["lm_head"], TOWER_16 + PATCH + 20_971_536 + VISION_VECTORS),
    (["lm_head", "multi_modal_projector*"], TOWER_16 + PATCH + PROJECTOR_16 + VISION_VECTORS),
    (["lm_head", "model.multi_modal_projector*"], TOWER_16 + PATCH + PROJECTOR_16 + VISION_VECTORS),
]


@pytest.mark.parametrize(("ignore", "vision_bytes"), FP8_CASES)
def test_a_one_algo_modelopt_checkpoint_quantizes_the_vision_layers_vllm_does(
    tmp_path: Path, ignore: list[str], vision_bytes: int
) -> None:
    quant = {"quant_method": "modelopt", "quant_algo": "FP8", "ignore": ignore}
    model = model_from_config(tmp_path, "llava-mistral-7b", {"quantization_config": quant})
    assert model.loaded_weight_bytes == FP8_DECODER + VOCAB_AND_NORM + vision_bytes


# vLLM's ModelOptFp8Config on those prefixes (an uninitialised ColumnParallelLinear: get_quant_method only asks
# its type): the projector quantized unless excluded, the vision_tower never.
ONE_ALGO_CASES = [
    (["lm_head"], "multi_modal_projector.linear_1", "ModelOptLinearMethod"),
    (["lm_head", "multi_modal_projector*"], "multi_modal_projector.linear_1", "UnquantizedLinearMethod"),
    (["lm_head"], "vision_tower.vision_model.encoder.layers.0.self_attn.qkv_proj", "UnquantizedLinearMethod"),
]


@pytest.mark.parametrize(("ignore", "prefix", "method"), ONE_ALGO_CASES)
def test_vllm_quantizes_the_same_vision_layers(ignore: list[str], prefix: str, method: str) -> None:
    from vllm.model_executor.layers.linear import ColumnParallelLinear
    from vllm.model_executor.layers.quantization import modelopt

    config = modelopt.ModelOptFp8Config.from_config(
        {"quant_method": "modelopt", "quant_algo": "FP8", "ignore": ignore}
    )
    layer = ColumnParallelLinear.__new__(ColumnParallelLinear)
    assert type(config.get_quant_method(layer, prefix)).__name__ == method


def test_llama4_vision_stays_16_bit_even_when_named(tmp_path: Path) -> None:
    # mllama4.py builds vision_model and multi_modal_projector with quant_config=None: names change nothing.
    def loaded(names: list[str]) -> int:
        layers = {
            f"language_model.model.layers.{i}.self_attn.q_proj": {"quant_algo": "FP8"} for i in range(48)
        }
        layers |= {name: {"quant_algo": "FP8"} for name in names}
        quant = {"quant_method": "modelopt", "quant_algo": "MIXED_PRECISION", "quantized_layers": layers}
        return model_from_config(
            tmp_path, "llama-4-scout-17b-16e", {"quantization_config": quant}
        ).loaded_weight_bytes

    vision = ["vision_model.model.layers.0.mlp.fc1", "multi_modal_projector.linear_1"]
    assert loaded(vision) == loaded([])
