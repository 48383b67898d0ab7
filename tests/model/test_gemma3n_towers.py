"""Gemma 3n's towers counted as vLLM 0.32's gemma3n_mm.py builds them, built by vLLM (and transformers) too.

gemma3n_mm.py builds the vision tower (timm's MobileNetV5 through transformers' TimmWrapperModel) and the audio
tower (transformers' Gemma3nAudioEncoder) with AutoModel, and embed_vision / embed_audio (Gemma3nMultimodalEmbedder)
without the quantization config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.gemma3n_towers import gemma3n_shapes
from engine.model.inspect_model import inspect_model
from engine.model.vision_params import quantizable_vision
from tests.model.test_gemma3n_text import E2B_TEXT, E4B_TEXT
from tests.model.vllm_meta_build import VllmMetaBuild

# The towers' sections of Gemma 3n's config.json (Gemma3nAudioConfig's and Gemma3nVisionConfig's values).
AUDIO = {"model_type": "gemma3n_audio", "hidden_size": 1536, "vocab_size": 128, "input_feat_size": 128}
AUDIO |= {"conf_num_hidden_layers": 12, "conf_num_attention_heads": 8, "conf_conv_kernel_size": 5}
AUDIO |= {"sscp_conv_channel_size": [128, 32], "sscp_conv_kernel_size": [[3, 3], [3, 3]]}
AUDIO |= {"sscp_conv_stride_size": [[2, 2], [2, 2]]}
VISION = {"model_type": "gemma3n_vision", "architecture": "mobilenetv5_300m_enc", "hidden_size": 2048}
VISION |= {"vocab_size": 128}
TINY_AUDIO = {"hidden_size": 64, "conf_num_hidden_layers": 2, "conf_num_attention_heads": 4}
TINY_AUDIO |= {"conf_conv_kernel_size": 3, "input_feat_size": 40, "sscp_conv_channel_size": [16, 8]}
TINY_AUDIO |= {"sscp_conv_kernel_size": [[3, 3], [5, 5]], "sscp_conv_stride_size": [[2, 2], [3, 3]]}


def _gemma3n(text: dict[str, Any]) -> dict[str, Any]:
    config = {"architectures": ["Gemma3nForConditionalGeneration"], "model_type": "gemma3n"}
    text_config = {key: value for key, value in text.items() if key != "architectures"}
    return config | {"text_config": text_config, "audio_config": AUDIO, "vision_config": VISION}


# Audio, h 1536: the subsampler's convs 128·1·3·3 + 128 and 32·128·3·3 + 32 (37,176) and its projection from
# 32 channels × 32 frequencies ((128 + 2 - 3) // 2 + 1 = 64, then 32): 1024·1536 = 1,572,864. A conformer block:
# two feed-forwards 2·(2·1536·6144 + 2·1536) = 37,754,880, attention 5·1536² + 192 + 2·1536 = 11,799,744, the light
# conv 1536·3072 + 1536² + 1536·5 + 2·1536 = 7,088,640, its norm 1536: 56,644,800; 12 of them 679,737,600;
# 681,348,640 in all. Tiny, h 64: convs 16·9 + 16 + 8·16·25 + 8 = 3,368, frequencies 40 → 20 → 6, projection
# 48·64 = 3,072; a block 2·(2·64·256 + 128) + 5·64² + 16 + 128 + 64·128 + 64² + 64·3 + 128 + 64 = 99,088: 204,616.
# embed_audio 128·1536 + 2·1536 + 1536·2048 = 3,345,408; embed_vision 128·2048 + 2·2048 + 2048² = 4,460,544.
AUDIO_CASES = [(AUDIO, 681_348_640), (TINY_AUDIO, 204_616)]
# MobileNetV5-300M 294,126,912 + embed_vision 4,460,544 + audio 681,348,640 + embed_audio 3,345,408.
TOWERS = 983_281_504


def test_towers_as_vllm_builds_them() -> None:
    shapes, vectors = gemma3n_shapes(_gemma3n(E4B_TEXT), 2048) or ([], 0)
    assert sum(shape.numel for shape in shapes) + vectors == TOWERS


def test_without_sub_configs_the_classes_defaults_are_built() -> None:
    shapes, vectors = gemma3n_shapes({"model_type": "gemma3n"}, 2048) or ([], 0)
    assert sum(shape.numel for shape in shapes) + vectors == TOWERS


def test_vllm_and_transformers_build_the_same_audio_tower_and_embedders(
    vllm_meta_build: VllmMetaBuild,
) -> None:
    cases: list[tuple[str, dict[str, Any], Any]] = [
        ("gemma3n_audio", audio, None) for audio, _ in AUDIO_CASES
    ]
    cases += [("gemma3n_embedder", {"hidden_size": 1536, "vocab_size": 128}, 2048)]
    cases += [("gemma3n_embedder", {"hidden_size": 2048, "vocab_size": 128}, 2048)]
    expected = [count for _, count in AUDIO_CASES] + [3_345_408, 4_460_544]
    assert vllm_meta_build.parameter_counts(cases) == expected


@pytest.mark.parametrize(
    ("text", "params", "language_model"),
    [
        # The Hub's safetensors metadata: 7,849,978,192 (E4B) and 5,439,438,272 (E2B) parameters, of which
        # vLLM drops the KV-sharing layers' k_proj, v_proj and k_norm (2·2048·512 + 256 = 2,097,408 a layer):
        # 15 and 10 of them.
        pytest.param(E4B_TEXT, 7_818_517_072, 6_835_235_568, id="gemma-3n-E4B"),
        pytest.param(E2B_TEXT, 5_418_464_192, 4_435_182_688, id="gemma-3n-E2B"),
    ],
)
def test_gemma3n_is_planned_with_its_towers(
    tmp_path: Path, text: dict[str, Any], params: int, language_model: int
) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_gemma3n(text) | {"torch_dtype": "bfloat16"}))
    model = inspect_model(tmp_path)
    assert (model.params, model.vision_params, model.vision_guessed) == (params, TOWERS, False)
    assert model.params - model.vision_params == language_model
    assert model.loaded_weight_bytes == 2 * params  # all of it bf16
    assert model.is_multimodal


def test_no_tower_takes_the_quantization_config() -> None:
    assert quantizable_vision("gemma3n") == ()


def test_another_timm_encoder_is_not_read(tmp_path: Path) -> None:
    config = _gemma3n(E2B_TEXT)
    config["vision_config"] = VISION | {"architecture": "mobilenetv5_base"}
    assert gemma3n_shapes(config, 2048) is None
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert inspect_model(tmp_path).vision_guessed
