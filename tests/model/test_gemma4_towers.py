"""Tests for engine.model.gemma4_towers: Gemma 4's vision and audio towers counted from config.json alone.

vLLM 0.32 gemma4_mm.py::Gemma4ForConditionalGeneration builds the towers with transformers' AutoModel
(Gemma4VisionModel, Gemma4AudioModel; recursive_replace_linear keeps every Linear's shape) and its own
Gemma4MultimodalEmbedder (embedding_projection only). The configs are made up; every figure is worked by
hand in the comments, and a second test builds transformers' own modules on the meta device and agrees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import read_architecture
from engine.model.gemma4_towers import gemma4_tower_shapes
from engine.model.param_count import estimate_params
from tests.plan.model_configs import TINY_GEMMA4_TEXT

TEXT_HIDDEN = 64
# Vision h 32, MLP 64, 2 layers, 2 heads and 1 KV head of 16, patch 4, a position table of 10.
VISION: dict[str, Any] = {
    "model_type": "gemma4_vision",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "patch_size": 4,
    "position_embedding_size": 10,
    "use_clipped_linears": True,
    "standardize": True,
}
# patch_embedder.input_proj 3·4·4 = 48 → 32: 1536; position_embedding_table 2·10·32 = 640.
# A layer: q 32·32 = 1024 + k, v 2·32·16 = 1024 + o 1024; gate, up, down 3·32·64 = 6144 (9216); q_norm,
#   k_norm 2·16 + four norms 4·32 = 160; clip bounds 7 Linears × 4 = 28. Two layers 2·9404 = 18,808.
# standardize: std_bias + std_scale 64. embed_vision.embedding_projection 32·64 = 2048.
VISION_PARAMS = 1_536 + 640 + 18_808 + 64 + 2_048  # 23,096
# Without clipped Linears and standardize: 23,096 − 2·28 − 64.
VISION_PLAIN = VISION_PARAMS - 56 - 64  # 22,976
# transformers' defaults (h 768, MLP 3072, 16 layers, 12 heads × 64, 12 KV heads, patch 16, table 10,240,
# no clip bounds, no standardize): input_proj 768·768 = 589,824; table 2·10,240·768 = 15,728,640; a layer
# 4·768·768 = 2,359,296 + 3·768·3072 = 7,077,888 + norms 2·64 + 4·768 = 3200, 16 layers 151,046,144;
# embedding_projection 768·64 = 49,152.
VISION_DEFAULTS = 589_824 + 15_728_640 + 151_046_144 + 49_152  # 167,413,760

# Audio h 32, 1 layer, 2 heads (head_dim 32 // 2 = 16), subsampling channels 8 then 4, kernel 3, output 48.
AUDIO: dict[str, Any] = {
    "model_type": "gemma4_audio",
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "subsampling_conv_channels": [8, 4],
    "conv_kernel_size": 3,
    "use_clipped_linears": True,
    "output_proj_dims": 48,
}
# Subsampling: conv 1 → 8 3×3 72 + LayerNorm 8; conv 8 → 4 3×3 288 + LayerNorm 4; input_proj_linear
#   (8 // 4)·4 = 8 → 32: 256. Together 628.
# The layer: two feed-forwards 2·(32·128 + 128·32) = 16,384 + their norms 4·32 = 128; attention q, k, v
#   3·32·32 = 3072 + post 1024 + relative_k_proj 1024 + per_dim_scale 16 = 5136; light conv linear_start
#   32·64 = 2048 + linear_end 1024 + depthwise 32·3 = 96 + two norms 64 = 3232; three norms 96; clip bounds
#   10 Linears × 4 = 40. Together 25,016.
# output_proj 32·48 = 1536 + bias 48; embed_audio.embedding_projection 48·64 = 3072.
AUDIO_PARAMS = 628 + 25_016 + 1_584 + 3_072  # 30,300
# The config leaves use_clipped_linears out: transformers' default True keeps the 40 bounds.


def _text() -> dict[str, Any]:
    """The shared tiny Gemma 4 text model (tests/plan/model_configs.py): 84,640 parameters served."""
    return {key: value for key, value in TINY_GEMMA4_TEXT.items() if key != "architectures"}


TEXT_PARAMS = 84_640


def _config(vision: dict[str, Any] | None, audio: dict[str, Any] | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "architectures": ["Gemma4ForConditionalGeneration"],
        "model_type": "gemma4",
        "text_config": _text(),
    }
    if vision is not None:
        config["vision_config"] = vision
    if audio is not None:
        config["audio_config"] = audio
    return config


_NO_CLIP = {"use_clipped_linears": False, "standardize": False}
_AUDIO_DEFAULT_CLIP = {key: value for key, value in AUDIO.items() if key != "use_clipped_linears"}
# vision_config, audio_config, tower parameters
CASES = [
    (VISION, None, VISION_PARAMS),
    (VISION, AUDIO, VISION_PARAMS + AUDIO_PARAMS),  # 53,396
    ({**VISION, **_NO_CLIP}, None, VISION_PLAIN),
    ({**VISION, **_NO_CLIP}, _AUDIO_DEFAULT_CLIP, VISION_PLAIN + AUDIO_PARAMS),
    ({"model_type": "gemma4_vision"}, None, VISION_DEFAULTS),
    (None, None, 0),  # no tower without its sub-config
]


@pytest.mark.parametrize(("vision", "audio", "tower"), CASES)
def test_gemma4_towers_from_the_config(
    vision: dict[str, Any] | None, audio: dict[str, Any] | None, tower: int
) -> None:
    counts = estimate_params(read_architecture(_config(vision, audio), Path(".")))
    assert counts.vision == tower
    assert counts.total == TEXT_PARAMS + tower
    assert counts.linear == estimate_params(read_architecture(_text(), Path("."))).linear  # towers apart


def _state_numel(module: Any) -> int:
    """Parameters and persistent buffers: what the checkpoint holds and vLLM's AutoWeightsLoader loads."""
    return sum(tensor.numel() for tensor in module.state_dict().values())


@pytest.mark.parametrize(("vision", "audio"), [(VISION, AUDIO), ({"model_type": "gemma4_vision"}, {})])
def test_transformers_builds_the_same_towers(vision: dict[str, Any], audio: dict[str, Any]) -> None:
    import torch
    from transformers.models.gemma4.configuration_gemma4 import (
        Gemma4AudioConfig,
        Gemma4TextConfig,
        Gemma4VisionConfig,
    )
    from transformers.models.gemma4.modeling_gemma4 import (
        Gemma4AudioModel,
        Gemma4MultimodalEmbedder,
        Gemma4VisionModel,
    )

    fields = {key: value for key, value in vision.items() if key != "model_type"}
    vision_config = Gemma4VisionConfig(**fields)
    audio_config = Gemma4AudioConfig(**{key: value for key, value in audio.items() if key != "model_type"})
    text_config = Gemma4TextConfig(hidden_size=TEXT_HIDDEN)
    with torch.device("meta"):  # shapes only, no memory
        built = _state_numel(Gemma4VisionModel(vision_config))
        built += _state_numel(Gemma4MultimodalEmbedder(vision_config, text_config))
        built += _state_numel(Gemma4AudioModel(audio_config))
        built += _state_numel(Gemma4MultimodalEmbedder(audio_config, text_config))
    shapes, vectors = gemma4_tower_shapes({"vision_config": vision, "audio_config": audio}, TEXT_HIDDEN)
    assert sum(shape.numel for shape in shapes) + vectors == built


# Gemma 4 Unified (gemma4_unified.py): no towers. Vision patch 2 × pooling 2 = model patches of 4 (3·4·4 = 48
# values), mm_embed_dim 64, a position table of 5, output_proj_dims 64; audio frames of 20.
UNIFIED_VISION: dict[str, Any] = {
    "model_type": "gemma4_unified_vision",
    "patch_size": 2,
    "pooling_kernel_size": 2,
    "mm_embed_dim": 64,
    "mm_posemb_size": 5,
    "output_proj_dims": 64,
}
UNIFIED_AUDIO: dict[str, Any] = {"model_type": "gemma4_unified_audio", "audio_embed_dim": 20}
# patch_ln1 weight + bias 2·48 = 96; patch_dense 48·64 = 3072 + bias 64; patch_ln2 and pos_norm 2·2·64 = 256;
# pos_embedding 5·2·64 = 640; embed_vision.embedding_projection 64·64 = 4096.
UNIFIED_VISION_PARAMS = 96 + 3_072 + 64 + 256 + 640 + 4_096  # 8,224
UNIFIED_AUDIO_PARAMS = 20 * 64  # embed_audio.embedding_projection: 1,280
# transformers' defaults (patch 16 × 3 = 48: 6912 values, mm_embed_dim 3840, table 1120, output 3840):
# patch_ln1 13,824; patch_dense 6912·3840 = 26,542,080 + 3840; patch_ln2, pos_norm 15,360; table
# 1120·2·3840 = 8,601,600; embed_vision 3840·64 = 245,760. Audio frames 640: 640·64 = 40,960.
UNIFIED_DEFAULTS = 13_824 + 26_542_080 + 3_840 + 15_360 + 8_601_600 + 245_760  # 35,422,464

# vision_config, audio_config, embedder parameters
UNIFIED_CASES = [
    (UNIFIED_VISION, None, UNIFIED_VISION_PARAMS),
    (UNIFIED_VISION, UNIFIED_AUDIO, UNIFIED_VISION_PARAMS + UNIFIED_AUDIO_PARAMS),  # 9,504
    ({"model_type": "gemma4_unified_vision"}, {}, UNIFIED_DEFAULTS + 40_960),
]


@pytest.mark.parametrize(("vision", "audio", "embedders"), UNIFIED_CASES)
def test_gemma4_unified_embedders_from_the_config(
    vision: dict[str, Any], audio: dict[str, Any] | None, embedders: int
) -> None:
    config = {**_config(vision, audio), "model_type": "gemma4_unified"}
    config["architectures"] = ["Gemma4UnifiedForConditionalGeneration"]
    assert estimate_params(read_architecture(config, Path("."))).vision == embedders


@pytest.mark.parametrize(("vision", "audio"), [(UNIFIED_VISION, UNIFIED_AUDIO), ({}, {})])
def test_transformers_builds_the_same_unified_embedders(
    vision: dict[str, Any], audio: dict[str, Any]
) -> None:
    import torch
    from transformers.models.gemma4_unified.configuration_gemma4_unified import (
        Gemma4UnifiedAudioConfig,
        Gemma4UnifiedTextConfig,
        Gemma4UnifiedVisionConfig,
    )
    from transformers.models.gemma4_unified.modeling_gemma4_unified import (
        Gemma4UnifiedMultimodalEmbedder,
        Gemma4UnifiedVisionEmbedder,
    )

    vision_config = Gemma4UnifiedVisionConfig(**{k: v for k, v in vision.items() if k != "model_type"})
    audio_config = Gemma4UnifiedAudioConfig(**{k: v for k, v in audio.items() if k != "model_type"})
    text_config = Gemma4UnifiedTextConfig(hidden_size=TEXT_HIDDEN)
    with torch.device("meta"):  # its multimodal_embedder is vLLM's embed_vision
        built = _state_numel(Gemma4UnifiedVisionEmbedder(vision_config, text_config))
        built += _state_numel(Gemma4UnifiedMultimodalEmbedder(audio_config, text_config))
    config = {"model_type": "gemma4_unified", "vision_config": vision, "audio_config": audio}
    shapes, vectors = gemma4_tower_shapes(config, TEXT_HIDDEN)
    assert sum(shape.numel for shape in shapes) + vectors == built
