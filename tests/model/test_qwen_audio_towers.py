"""Qwen's Omni thinkers' and Qwen2-Audio's towers counted as vLLM 0.32 builds them, and built by vLLM itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.inspect_model import inspect_model
from engine.model.vision_params import quantizable_vision, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild

# Qwen/Qwen2.5-Omni-7B's config.json, trimmed to the sizes (its published values).
_VISION_7B = {"depth": 32, "embed_dim": 1280, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16}
_VISION_7B |= {"in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
_VISION_7B |= {"window_size": 112, "out_hidden_size": 3584, "fullatt_block_indexes": [7, 15, 23, 31]}
_AUDIO_7B = {"d_model": 1280, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120, "encoder_layers": 32}
_AUDIO_7B |= {"num_mel_bins": 128, "max_source_positions": 1500, "n_window": 100, "output_dim": 3584}
_TEXT_7B = {"model_type": "qwen2_5_omni_text", "hidden_size": 3584, "intermediate_size": 18944}
_TEXT_7B |= {
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
}
_TEXT_7B |= {"tie_word_embeddings": False, "max_position_embeddings": 32768}
OMNI_7B = {"architectures": ["Qwen2_5OmniModel"], "model_type": "qwen2_5_omni", "torch_dtype": "bfloat16"}
OMNI_7B |= {
    "thinker_config": {"audio_config": _AUDIO_7B, "vision_config": _VISION_7B, "text_config": _TEXT_7B}
}
_TINY_VISION = {"hidden_size": 16, "intermediate_size": 24, "depth": 2, "num_heads": 2, "out_hidden_size": 32}
_TINY_VISION |= {"patch_size": 2}
_TINY_AUDIO = {"d_model": 8, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 12}
_TINY_AUDIO |= {"num_mel_bins": 4, "output_dim": 32}

CASES: list[tuple[dict[str, Any], dict[str, Any], int, int]] = [
    # Vision: Conv3d 3·2·2² = 24 → 16 (no bias) 384; 2 blocks of 2,336 (qkv 16×48 + proj 16² = 1,024, gate_up
    # 16×48 = 768, down 24×16 = 384, biases 48 + 16 + 48 + 16 = 128, two RMSNorms 32) = 4,672; merger ln_q 16,
    # 64² + 64, 64×32 + 32 = 6,256: 11,312. Audio: convs 4·3·8 + 8 + 8·3·8 + 8 = 304, bos/eos 2 × 32 = 64, 2 blocks
    # of 524 (q/k/v/out 4 × 64 + 24, fc1 96 + 12, fc2 96 + 8, two LayerNorms 32) = 1,048, ln_post 16, proj 8×32 +
    # 32 = 288: 1,720. 13,032.
    (_TINY_VISION, _TINY_AUDIO, 32, 13_032),
    # Qwen2.5-Omni-7B: the Qwen2.5-VL-7B tower, 676,550,144 (tests/model/test_inspect_model_real_configs.py), and
    # the audio tower: conv1 128·3·1280 + 1,280 = 492,800, conv2 1280·3·1280 + 1,280 = 4,916,480, bos/eos 2 ×
    # 3,584 = 7,168, 32 blocks of 19,676,160 (q/k/v/out 4 × 1280² + 3,840 biases, fc1 and fc2 2 × 1280×5120 +
    # 5,120 + 1,280, two LayerNorms 5,120) = 629,637,120, ln_post 2,560, proj 1280×3584 + 3,584 = 4,591,104:
    # 639,647,232. 1,316,197,376.
    (_VISION_7B, _AUDIO_7B, 3584, 1_316_197_376),
]


def _omni(vision: dict[str, Any], audio: dict[str, Any]) -> dict[str, Any]:
    return {"model_type": "qwen2_5_omni", "thinker_config": {"vision_config": vision, "audio_config": audio}}


@pytest.mark.parametrize(("vision", "audio", "text_hidden", "expected"), CASES)
def test_thinker_towers_as_vllm_builds_them(
    vision: dict[str, Any], audio: dict[str, Any], text_hidden: int, expected: int
) -> None:
    shapes, vectors = vision_tower_shapes(_omni(vision, audio), text_hidden)
    assert sum(shape.numel for shape in shapes) + vectors == expected


def test_vllm_builds_the_same_towers(vllm_meta_build: VllmMetaBuild) -> None:
    counts = vllm_meta_build.parameter_counts(
        [("qwen2_5_omni", vision, audio) for vision, audio, _, _ in CASES]
    )
    assert counts == [expected for *_, expected in CASES]


def test_without_sub_configs_the_classes_defaults_are_built(vllm_meta_build: VllmMetaBuild) -> None:
    # Qwen2_5OmniVisionEncoderConfig's hidden_size default is 3584 (not the 7B's 1280): vLLM builds a tower of
    # 3,083,025,152 and the 7B's audio tower, 639,647,232 (above). 3,722,672,384, as vLLM's own build counts it.
    shapes, vectors = vision_tower_shapes({"model_type": "qwen2_5_omni"}, 3584)
    assert sum(shape.numel for shape in shapes) + vectors == 3_722_672_384
    assert vllm_meta_build.parameter_counts([("qwen2_5_omni", {}, {})]) == [3_722_672_384]


def test_only_the_vision_tower_takes_the_quantization_config() -> None:
    # qwen2_5_omni_thinker.py: visual (tower and merger) with quant_config; the audio tower is transformers' own.
    assert quantizable_vision("qwen2_5_omni") == (
        ("vision.", "visual"),
        ("multi_modal_projector.", "visual"),
        ("vision_adapter.", "visual"),
    )


def test_qwen2_5_omni_7b_is_its_thinker(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(OMNI_7B))
    model = inspect_model(tmp_path)
    # Qwen2-7B's layers with q/k/v biases, untied (7,615,616,512: tests/model/test_inspect_model_real_configs.py)
    # + the towers 1,316,197,376 = 8,931,813,888; the talker and token2wav vLLM does not load.
    assert (model.model_type, model.params, model.vision_params) == ("qwen2", 8_931_813_888, 1_316_197_376)


# Qwen/Qwen3-Omni-30B-A3B-Instruct's thinker vision_config and audio_config, trimmed to the sizes.
_Q3_VISION = {
    "depth": 27,
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "out_hidden_size": 2048,
    "num_heads": 16,
}
_Q3_VISION |= {"patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3}
_Q3_VISION |= {"deepstack_visual_indexes": [8, 16, 24], "image_size": 768, "apply_vit_abs_pos_embed": True}
_Q3_AUDIO = {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120}
_Q3_AUDIO |= {"num_mel_bins": 128, "output_dim": 2048, "downsample_hidden_size": 480}
_Q3_TINY_VISION = {
    "depth": 2,
    "hidden_size": 16,
    "intermediate_size": 24,
    "out_hidden_size": 32,
    "num_heads": 2,
}
_Q3_TINY_VISION |= {
    "patch_size": 2,
    "deepstack_visual_indexes": [0],
    "image_size": 8,
    "apply_vit_abs_pos_embed": True,
}
_Q3_TINY_AUDIO = {"d_model": 8, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 12}
_Q3_TINY_AUDIO |= {"num_mel_bins": 16, "output_dim": 32, "downsample_hidden_size": 4}

QWEN3_CASES: list[tuple[dict[str, Any], dict[str, Any], int]] = [
    # Vision: Conv3d 3·2·2² = 24 → 16 with a bias 400; positions (8/2)² × 16 = 256; 2 blocks of 1,960 (qkv + proj
    # 4 × 16² + 64, fc1 16×24 + 24, fc2 24×16 + 16, two LayerNorms 64); merger LayerNorm 32 + 64² + 64 + 64×32 +
    # 32 = 6,272; one deepstack merger, its LayerNorm over 64: 6,368. 17,216. Audio: Conv2d 1→4 40, 4→4 twice
    # 2 × 148, conv_out from 4 × 2 mel bins left (16 → 8 → 4 → 2) 8×8 = 64; 2 blocks of 532 (qkv 3 × 64 + 24,
    # out 64 + 8, fc1 96 + 12, fc2 96 + 8, two LayerNorms 32); ln_post 16, proj1 64 + 8, proj2 8×32 + 32. 1,840.
    # 19,056.
    (_Q3_TINY_VISION, _Q3_TINY_AUDIO, 19_056),
    # Qwen3-Omni-30B-A3B: the vision tower as Qwen3-VL-30B-A3B's (538,631,408: test_inspect_model_real_configs.py;
    # positions (768/16)² = 2,304). Audio: convs 4,800 + 2 × (9·480² + 480) = 4,152,960, conv_out 480·16 → 1280
    # 9,830,400, 32 blocks of 19,677,440 (qkv 3 × 1280² + 3,840, out 1280² + 1,280, fc1 and fc2 2 × 1280×5120 +
    # 6,400, two LayerNorms 5,120) = 629,678,080, ln_post 2,560, proj1 1280² + 1,280, proj2 1280×2048 + 2,048:
    # 647,927,168. 1,186,558,576.
    (_Q3_VISION, _Q3_AUDIO, 1_186_558_576),
]


@pytest.mark.parametrize(("vision", "audio", "expected"), QWEN3_CASES)
def test_qwen3_omni_thinker_towers_as_vllm_builds_them(
    vision: dict[str, Any], audio: dict[str, Any], expected: int
) -> None:
    config = {
        "model_type": "qwen3_omni_moe",
        "thinker_config": {"vision_config": vision, "audio_config": audio},
    }
    shapes, vectors = vision_tower_shapes(config, 2048)
    assert sum(shape.numel for shape in shapes) + vectors == expected


def test_vllm_builds_the_same_qwen3_omni_towers(vllm_meta_build: VllmMetaBuild) -> None:
    counts = vllm_meta_build.parameter_counts(
        [("qwen3_omni", vision, audio) for vision, audio, _ in QWEN3_CASES]
    )
    assert counts == [expected for *_, expected in QWEN3_CASES]


def test_qwen3_omnis_thinker_is_planned_as_qwen3_moe_with_its_towers(tmp_path: Path) -> None:
    text = {
        "model_type": "qwen3_omni_moe_text",
        "hidden_size": 64,
        "intermediate_size": 128,
        "vocab_size": 256,
    }
    text |= {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 4}
    text |= {"num_experts_per_tok": 2, "moe_intermediate_size": 32}
    thinker = {"text_config": text, "vision_config": _Q3_TINY_VISION, "audio_config": _Q3_TINY_AUDIO}
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "qwen3_omni_moe", "thinker_config": thinker})
    )
    model = inspect_model(tmp_path)
    assert (model.model_type, model.vision_params, model.vision_guessed) == ("qwen3_moe", 19_056, False)
    assert model.moe is not None and model.moe.num_experts == 4


QWEN2_AUDIO_CASES: list[tuple[dict[str, Any], int, int]] = [
    # Convs 4·3·8 + 8 + 8·3·8 + 8 = 304; positions 6 × 8 = 48; 2 blocks of 524 (as above) = 1,048; layer_norm
    # 16; projector 8×32 + 32 = 288. 1,704.
    (_TINY_AUDIO | {"max_source_positions": 6}, 32, 1_704),
    # Qwen2-Audio-7B (Qwen2AudioEncoderConfig's defaults are its sizes): convs 492,800 + 4,916,480, positions
    # 1,500 × 1,280 = 1,920,000, 32 blocks of 19,676,160 = 629,637,120, layer_norm 2,560: 636,968,960; projector
    # 1280×4096 + 4,096 = 5,246,976. 642,215,936.
    ({}, 4096, 642_215_936),
]


@pytest.mark.parametrize(("audio", "text_hidden", "expected"), QWEN2_AUDIO_CASES)
def test_qwen2_audio_as_vllm_builds_it(audio: dict[str, Any], text_hidden: int, expected: int) -> None:
    shapes, vectors = vision_tower_shapes({"model_type": "qwen2_audio", "audio_config": audio}, text_hidden)
    assert sum(shape.numel for shape in shapes) + vectors == expected
    # qwen2_audio.py builds neither with the quantization config.
    assert quantizable_vision("qwen2_audio") == ()


def test_vllm_builds_the_same_qwen2_audio(vllm_meta_build: VllmMetaBuild) -> None:
    counts = vllm_meta_build.parameter_counts(
        [("qwen2_audio", audio, hidden) for audio, hidden, _ in QWEN2_AUDIO_CASES]
    )
    assert counts == [expected for *_, expected in QWEN2_AUDIO_CASES]
