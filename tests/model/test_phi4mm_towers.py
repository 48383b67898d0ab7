"""Phi-4-multimodal's image encoder and audio embedding counted as vLLM's phi4mm.py and phi4mm_audio.py build them:
by hand and against vLLM's own modules on meta.

PHI4MM_AUDIO is microsoft/Phi-4-multimodal-instruct's config.json ``audio_processor.config`` and ``embd_layer`` as
TensorRT-LLM's test of its Phi-4-MM model copies them (its ``num_blocks`` 24 restored from the comment beside it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import read_architecture
from engine.model.header_counts import classify_tensor, count_from_headers
from engine.model.param_count import estimate_params
from engine.model.safetensors_headers import TensorHeader
from engine.model.vision_params import quantizable_vision, vision_read, vision_tower_shapes
from tests.model.vllm_meta_build import VllmMetaBuild

PHI4MM_ENCODER: dict[str, Any] = {
    "activation": "swish",
    "activation_checkpointing": {"interval": 1, "module": "transformer", "offload": False},
    "attention_dim": 1024,
    "attention_heads": 16,
    "batch_norm": False,
    "bias_in_glu": True,
    "causal": True,
    "chunk_size": -1,
    "cnn_layer_norm": True,
    "conv_activation": "swish",
    "conv_glu_type": "swish",
    "depthwise_multiplier": 1,
    "depthwise_seperable_out_channel": 1024,
    "dropout_rate": 0.0,
    "encoder_embedding_config": {"input_size": 80},
    "ext_pw_kernel_size": 1,
    "ext_pw_out_channel": 1024,
    "input_layer": "nemo_conv",
    "input_size": 80,
    "kernel_size": 3,
    "left_chunk": 18,
    "linear_units": 1536,
    "nemo_conv_settings": {"conv_channels": 1024},
    "num_blocks": 24,
    "relative_attention_bias_args": {"t5_bias_max_distance": 500, "type": "t5"},
    "time_reduction": 8,
}
PHI4MM_EMBD_LAYER: dict[str, Any] = {
    "audio_embd_layer": {
        "compression_rate": 8,
        "downsample_rate": 1,
        "embedding_cls": "audio",
        "enable_gradient_checkpointing": True,
        "projection_cls": "mlp",
        "use_conv_downsample": False,
        "use_qformer": False,
    },
    "embedding_cls": "image_audio",
}
PHI4MM = {
    "hidden_size": 3072,
    "vocab_size": 200064,
    "img_processor": None,
    "audio_processor": {"config": PHI4MM_ENCODER, "name": "cascades"},
    "embd_layer": PHI4MM_EMBD_LAYER,
}
# The test's own: the conv module's other branches (a BatchNorm, E and S apart from d, a depthwise multiplier, a
# wider ext_pw kernel), a symmetric T5 bias, two subsampling stages, mel norms over encoder_embedding_config's 80
# bins (not input_size's 40), a linear projection and layer_idx 3.
TINY_ENCODER = {
    **PHI4MM_ENCODER,
    "attention_dim": 64,
    "attention_heads": 4,
    "linear_units": 96,
    "num_blocks": 2,
}
TINY_ENCODER |= {"batch_norm": True, "ext_pw_out_channel": 48, "depthwise_seperable_out_channel": 32}
TINY_ENCODER |= {"depthwise_multiplier": 2, "ext_pw_kernel_size": 3, "time_reduction": 4}
TINY_ENCODER |= {"nemo_conv_settings": {"conv_channels": 8}, "input_size": 40}
TINY_ENCODER |= {
    "relative_attention_bias_args": {"t5_bias_max_distance": 20, "type": "t5", "t5_bias_symmetric": True}
}
TINY = {
    "hidden_size": 32,
    "vocab_size": 100,
    "img_processor": {"layer_idx": 3},
    "audio_processor": {"config": TINY_ENCODER, "name": "cascades"},
    "embd_layer": {"audio_embd_layer": {"projection_cls": "linear"}},
}

# config, text hidden size, image encoder + audio embedding parameters
CASES = [
    # Image: 26 SigLIP blocks (layer_idx -2) of 4 · 1152² + 2 · 1152 · 4304 = 15,224,832 and 4 · 1152 + 4304 + 1152
    # + 4 · 1152 = 14,672 → 396,227,104; patch 588 · 1152 + 1152 = 678,528; 1024 positions · 1152 = 1,179,648:
    # 398,085,280; glb_GN and sub_GN 2304; img_projection 1152 · 3072 + 3072 + 3072² + 3072 = 12,982,272:
    # 411,069,856. Audio: NeMo input 1024 · 9 + 1024 + 2 × (1024 · 9 + 1024 + 1024² + 1024) = 2,129,920 and 1024 ·
    # (80 → 40 → 20 → 10) + 1024 = 10,486,784. A block: two feed-forwards 2 · (2048 + 1024 · 3072 + 3072 + 1536 ·
    # 1024 + 1024) = 9,449,472, q/k/v/out 4 · (1024² + 1024) = 4,198,400, the conv module 2048 + (1024² + 1024) +
    # (1024 · 2048 + 2048) + b1 / b2 2048 + (3 · 1024 + 1024) + (1024² + 1024) = 4,206,592, two LayerNorms 4096:
    # 17,858,560, × 24 = 428,605,440. T5 biases 1000 · 16 = 16,000, mel mean and deviation 160. Projections 2 ·
    # 12,589,056 = 25,178,112. 466,416,416. Together 877,486,272.
    (PHI4MM, 3072, 877_486_272),
    # Tiny image: 4 blocks (layer_idx 3) → 4 · 15,239,504 = 60,958,016, + 678,528 + 1,179,648 + 2304 + 1152 · 32 +
    # 32 + 32² + 32 = 62,856,448. Tiny audio: 8 · 9 + 8 + (8 · 9 + 8 + 64 + 8) = 232 and 8 · (40 → 20 → 10) · 64 +
    # 64 = 5184. A block: 2 · (128 + 64 · 192 + 192 + 96 · 64 + 64) = 37,632; 4 · (64² + 64) = 16,640; the conv
    # module 128 + (64 · 48 · 3 + 48) + (64 · 96 · 3 + 96) + b1 / b2 96 + (48 · 64 + 64) + BatchNorm 256 + (128 · 3
    # + 128) + (128 · 32 + 32) + (32 · 64 + 64) = 38,160; 256: 92,688, × 2 = 185,376. T5 20 · 4 = 80, the mel mean and
    # deviation over encoder_embedding_config's 80 bins 160. Projection 64 · 32 + 32 = 2080. 193,112. Together
    # 63,049,560.
    (TINY, 32, 63_049_560),
]


@pytest.mark.parametrize(("config", "text_hidden", "params"), CASES)
def test_image_and_audio_by_hand(config: dict[str, Any], text_hidden: int, params: int) -> None:
    shapes, vectors = vision_tower_shapes({"model_type": "phi4mm", **config}, text_hidden)
    assert sum(shape.numel for shape in shapes) + vectors == params


def test_vllm_builds_the_same_image_and_audio(vllm_meta_build: VllmMetaBuild) -> None:
    assert vllm_meta_build.parameter_counts([("phi4mm", config, None) for config, *_ in CASES]) == [
        params for *_, params in CASES
    ]


@pytest.mark.parametrize(
    "audio",
    [
        {"name": "cascades", "config": {**PHI4MM_ENCODER, "attention_group_size": 2}},  # grouped k/v
        {"name": "whisper", "config": PHI4MM_ENCODER},  # vLLM raises for any other audio processor
    ],
)
def test_an_audio_layout_not_read_is_a_guess(audio: dict[str, Any]) -> None:
    assert not vision_read({**PHI4MM, "model_type": "phi4mm", "audio_processor": audio})


def test_the_whole_model() -> None:
    """The text model is Phi-4-mini's (LlamaModel): 32 layers of 3072² + 2 · 3072 · 1024 + 3072² = 25,165,824
    attention + 3 · 3072 · 8192 = 75,497,472 + 6144 norms = 100,669,440 → 3,221,422,080, the tied embedding
    200,064 · 3072 = 614,596,608 and a norm 3072: 3,836,021,760. With the towers: 4,713,508,032 (the card's 5.6B
    also counts the LoRA adapters stored beside the base layers, 369,098,752 vision + 461,373,440 speech, which
    vLLM does not load)."""
    config = {
        "architectures": ["Phi4MMForCausalLM"],
        "model_type": "phi4mm",
        **PHI4MM,
        "intermediate_size": 8192,
        "num_hidden_layers": 32,
        "num_attention_heads": 24,
        "num_key_value_heads": 8,
        "tie_word_embeddings": True,
    }
    arch = read_architecture(config, Path("."))
    assert arch.is_multimodal
    counts = estimate_params(arch)
    assert (counts.total, counts.vision) == (4_713_508_032, 877_486_272)
    assert quantizable_vision("phi4mm") == ()


def test_headers_leave_the_adapters_out_and_count_the_towers_as_vision() -> None:
    headers = [
        TensorHeader("model.layers.0.self_attn.qkv_proj.base_layer.weight", "BF16", (5120, 3072)),
        TensorHeader("model.layers.0.self_attn.qkv_proj.lora_A.vision.weight", "BF16", (256, 3072)),
        TensorHeader("model.layers.0.self_attn.qkv_proj.lora_B.speech.weight", "BF16", (5120, 320)),
        TensorHeader(
            "model.embed_tokens_extend.audio_embed.audio_projection.speech.0.weight", "BF16", (3072, 1024)
        ),
    ]
    counts = count_from_headers(headers)
    assert (counts.total, counts.linear, counts.vision) == (
        5120 * 3072 + 3072 * 1024,
        5120 * 3072,
        3072 * 1024,
    )
    assert classify_tensor("model.embed_tokens_extend.image_embed.glb_GN", [1, 1, 1152]) == "vision"
