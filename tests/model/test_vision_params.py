"""Gemma 4's towers sized at the bits vLLM 0.32 builds them with (vision_params.quantizable_vision)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.model.checkpoint_size import checkpoint_bytes, weight_layout
from engine.model.gemma4_towers import gemma4_tower_shapes
from engine.model.param_count import ModelShapes

TEXT_HIDDEN = 128
# Made-up Gemma 4 vision tower: h 64, 2 layers, 2 heads × head_dim 32, patch 4; "64" has MLP 128 (both sizes
# multiples of 64), "96" MLP 96 (96 % 64 = 32); the cases give the MLP width. Linears (out rows in brackets):
#   patch_embedder.input_proj 3·4² = 48 → 64: 3,072 (64 rows)
#   q/k/v/o 8 matrices of 64 × 64: 32,768 (512 rows)
#   "64": gate/up 4 of 64 → 128 and down 2 of 128 → 64: 49,152 (512 + 128 rows)
#   "96": gate/up 4 of 64 → 96 and down 2 of 96 → 64: 24,576 + 12,288 = 36,864 (384 + 128 rows)
#   embed_vision.embedding_projection 64 → 128: 8,192 (128 rows)
# "64": 93,184 weights, 16 matrices, 1,344 rows (tower 84,992 / 15 / 1,216); "96": 80,896, 16, 1,216 (tower
# 72,704 / 15 / 1,088). Vectors (norms, position tables) are left out: they stay 16-bit in every case.
_VISION = {"num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 32}
_VISION |= {"hidden_size": 64, "patch_size": 4}
# Gemma 4 Unified: patch_dense 3·(4·2)² = 192 → 64: 12,288 (64 rows); embed_vision 64 → 128: 8,192.
_UNIFIED = {"patch_size": 4, "pooling_kernel_size": 2, "mm_embed_dim": 64, "output_proj_dims": 64}

# compressed-tensors W8A16 as llm-compressor writes it: INT8 per channel, pack-quantized (weight_packed, a
# bfloat16 weight_scale per row, weight_shape 2 × int64 = 16 B a matrix).
_W8A16 = {"weights": {"num_bits": 8, "type": "int", "strategy": "channel", "symmetric": True}}
_W8A16 |= {"targets": ["Linear"], "input_activations": None, "format": "pack-quantized"}


def _ct(ignore: list[str]) -> dict[str, Any]:
    return {"quant_method": "compressed-tensors", "config_groups": {"group_0": _W8A16}, "ignore": ignore}


# FP8 per tensor (quant_method fp8): a float32 weight_scale and input_scale a matrix, 8 B.
_FP8 = {"quant_method": "fp8", "activation_scheme": "static"}
_MODELOPT_FP8 = {"quant_method": "modelopt", "quant_algo": "FP8", "ignore": ["lm_head"]}

CASES = [
    # compressed-tensors: tower_quant whatever the sizes. "96": 80,896 B + 1,216 rows × 2 B + 16 × 16 B.
    ("gemma4", 96, _ct(["lm_head"]), 80_896 + 2_432 + 256),
    # "64": 93,184 + 1,344 × 2 + 16 × 16 = 96,128 B.
    ("gemma4", 128, _ct(["lm_head"]), 96_128),
    # Ignored by regex (should_ignore_layer, re.match): everything 16-bit, 80,896 × 2 B.
    ("gemma4", 96, _ct(["lm_head", "re:.*vision_tower.*", "re:.*embed_vision.*"]), 161_792),
    # The checkpoint's (HF) name of embed_vision, mapped by hf_to_vllm_mapper: embed_vision 8,192 × 2 = 16,384 B,
    # the tower 72,704 + 1,088 × 2 + 15 × 16 = 75,120 B.
    ("gemma4", 96, _ct(["lm_head", "model.embed_vision.embedding_projection"]), 16_384 + 75_120),
    # A target that does not reach the towers (no "Linear", a regex on the decoder only): 16-bit.
    ("gemma4", 96, _ct([]) | {"config_groups": {"g": _W8A16 | {"targets": ["re:.*layers.*"]}}}, 161_792),
    # FP8: sizes not multiples of 64, tower_quant None, all 16-bit.
    ("gemma4", 96, _FP8, 161_792),
    # Multiples of 64: FP8, 93,184 B + 16 × 8 B.
    ("gemma4", 128, _FP8, 93_312),
    # ... embed_vision skipped (Fp8Config ignored_layers / modules_to_not_convert, exact names): 16,384 B + the
    # tower 84,992 + 15 × 8 = 85,112 B.
    ("gemma4", 128, _FP8 | {"modules_to_not_convert": ["model.embed_vision.embedding_projection"]}, 101_496),
    # ModelOpt FP8, "64": built with the config, but get_quant_method keeps "vision_tower" prefixes 16-bit:
    # the tower 84,992 × 2 = 169,984 B, embed_vision FP8 8,192 + 8 = 8,200 B.
    ("gemma4", 128, _MODELOPT_FP8, 169_984 + 8_200),
    # ModelOpt, "96": tower_quant None, 161,792 B.
    ("gemma4", 96, _MODELOPT_FP8, 161_792),
    # Unified: patch_dense gets the config (W8A16 12,288 + 64 × 2 + 16 = 12,432 B), embed_vision never
    # (8,192 × 2 = 16,384 B).
    ("gemma4_unified", 0, _ct(["lm_head"]), 12_432 + 16_384),
    # ... FP8 too, whatever the sizes: 12,288 + 8 = 12,296 B.
    ("gemma4_unified", 0, _FP8, 12_296 + 16_384),
]


@pytest.mark.parametrize(("model_type", "mlp", "quant", "expected"), CASES)
def test_gemma4_towers_are_quantized_as_vllm_builds_them(
    model_type: str, mlp: int, quant: dict[str, Any], expected: int
) -> None:
    vision = _UNIFIED if model_type == "gemma4_unified" else _VISION | {"intermediate_size": mlp}
    config = {"model_type": model_type, "vision_config": vision, "quantization_config": quant}
    config |= {"torch_dtype": "bfloat16"}
    linears, _ = gemma4_tower_shapes(config, TEXT_HIDDEN)
    shapes = ModelShapes(tuple(linears), vector_params=0, embedding=0, vision_vector_params=0, mtp=0)
    assert checkpoint_bytes(shapes, weight_layout(config)).total == expected


# An audio tower beside the "96" vision tower: h 64, 1 layer, 2 heads, subsampling channels 8 and 4, output 64.
#   input_proj_linear (8 // 4)·4 = 8 → 64: 512 (64 rows); ffw_layer_1 2 of 64 → 256: 32,768 (512 rows);
#   ffw_layer_2 2 of 256 → 64: 32,768 (128); q/k/v 3 of 64 × 64: 12,288 (192); post, relative_k_proj,
#   linear_end, output_proj 4 of 64 × 64: 16,384 (256); linear_start 64 → 128: 8,192 (128);
#   embed_audio 64 → 128: 8,192 (128) = 111,104 weights, 14 matrices, 1,408 rows.
_AUDIO = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
_AUDIO |= {"subsampling_conv_channels": [8, 4], "output_proj_dims": 64}
AUDIO_CASES = [
    # FP8 at MLP 96: tower_quant None for the audio tower too (one choice, from the vision sizes):
    # (80,896 + 111,104) × 2 B.
    (_FP8, 384_000),
    # compressed-tensors ignoring the vision side only: vision 161,792 B 16-bit, audio W8A16
    # 111,104 + 1,408 × 2 + 14 × 16 = 114,144 B.
    (_ct(["lm_head", "re:.*vision_tower.*", "re:.*embed_vision.*"]), 161_792 + 114_144),
]


@pytest.mark.parametrize(("quant", "expected"), AUDIO_CASES)
def test_the_audio_tower_follows_the_vision_towers_choice(quant: dict[str, Any], expected: int) -> None:
    vision = _VISION | {"intermediate_size": 96}
    config = {"model_type": "gemma4", "vision_config": vision, "audio_config": _AUDIO}
    config |= {"quantization_config": quant, "torch_dtype": "bfloat16"}
    linears, _ = gemma4_tower_shapes(config, TEXT_HIDDEN)
    shapes = ModelShapes(tuple(linears), vector_params=0, embedding=0, vision_vector_params=0, mtp=0)
    assert checkpoint_bytes(shapes, weight_layout(config)).total == expected


# vLLM's own quantization configs on the prefixes gemma4_mm.py / gemma4_unified.py build (an uninitialised
# ReplicatedLinear: get_quant_method asks its type and class name), where tower_quant is the checkpoint's config.
VLLM_CASES = [
    (["lm_head"], "embed_vision.embedding_projection", "CompressedTensorsLinearMethod"),
    (["re:.*vision_tower.*"], "vision_tower.encoder.layers.0.mlp.down_proj", "UnquantizedLinearMethod"),
    (["embed_vision.embedding_projection"], "embed_vision.embedding_projection", "UnquantizedLinearMethod"),
]


@pytest.mark.parametrize(("ignore", "prefix", "method"), VLLM_CASES)
def test_vllm_compressed_tensors_quantizes_the_same_tower_layers(
    ignore: list[str], prefix: str, method: str
) -> None:
    from vllm.model_executor.layers.linear import ReplicatedLinear
    from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (
        CompressedTensorsConfig,
    )

    config = CompressedTensorsConfig.from_config(_ct(ignore))
    layer = ReplicatedLinear.__new__(ReplicatedLinear)
    assert type(config.get_quant_method(layer, prefix)).__name__ == method
