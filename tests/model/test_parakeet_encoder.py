"""The Nemotron Omni models' sound encoder (ProjectedParakeet) counted as vLLM's parakeet.py builds it: by hand and
against vLLM's own module.

OMNI_SOUND is Nemotron-3-Nano-Omni-30B-A3B-Reasoning-BF16's ``sound_config`` as a public checkpoint reference
transcribes its config.json (four test fixtures of other ports agree on the sizes). Its tensor list, 28 a block,
holds no conv biases: ``convolution_bias`` false.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import read_architecture
from engine.model.parakeet_encoder import parakeet_shapes
from engine.model.param_count import estimate_params
from engine.model.vision_params import quantizable_vision, vision_read
from tests.model.vllm_meta_build import VllmMetaBuild
from tests.plan.model_configs import published_config

OMNI_SOUND: dict[str, Any] = {
    "model_type": "parakeet",
    "hidden_size": 1024,
    "num_attention_heads": 8,
    "num_hidden_layers": 24,
    "intermediate_size": 4096,
    "conv_kernel_size": 9,
    "convolution_bias": False,
    "subsampling_conv_channels": 256,
    "subsampling_conv_kernel_size": 3,
    "subsampling_conv_stride": 2,
    "subsampling_factor": 8,
    "num_mel_bins": 128,
    "projection_hidden_size": 4096,
    "projection_bias": False,
    "sampling_rate": 16000,
}
# The test's own: a head_dim apart from hidden / heads, two subsampling stages, biased convs and projection.
TINY_SOUND: dict[str, Any] = {
    "model_type": "parakeet",
    "hidden_size": 64,
    "num_attention_heads": 4,
    "head_dim": 32,
    "num_hidden_layers": 2,
    "intermediate_size": 96,
    "conv_kernel_size": 5,
    "subsampling_conv_channels": 8,
    "subsampling_factor": 4,
    "num_mel_bins": 80,
    "projection_hidden_size": 48,
    "projection_bias": True,
    "sampling_rate": 16000,
}

# sound config, text hidden size, parameters
CASES = [
    # Omni: subsampling 256 · 9 + 256 (1 → 256), 2 × (256 · 9 + 256 + 256² + 256) (depthwise, pointwise) = 139,264,
    # and the Linear from 256 · (128 // 2³ = 16) = 4096 into 1024, biased: 4,195,328 → 4,334,592. A block: two
    # feed-forwards 2 · 2 · 1024 · 4096 = 16,777,216; q/k/v/o/relative_k 5 · 1024² = 5,242,880 and bias_u/v 2 · 8 ·
    # 128 = 2,048; the conv module 2 · 1024² + 1024² + 9 · 1024 (depthwise) + 4 · 1024 (BatchNorm) = 3,159,040;
    # five LayerNorms 10,240: 25,191,424, × 24 = 604,594,176 (encoder 608,928,768, the "0.6B" of Parakeet-TDT-0.6B).
    # Projection: 1024 (RMSNorm) + 1024 · 4096 + 4096 · 2688 = 15,205,376. 624,134,144.
    (OMNI_SOUND, 2688, 624_134_144),
    # Tiny: subsampling 8 · 9 + 8 = 80, one more stage 8 · 9 + 8 + 64 + 8 = 152, Linear 8 · (80 // 4 = 20) · 64 +
    # 64 = 10,304: 10,536. A block: 2 · 2 · 64 · 96 = 24,576; q/k/v/relative_k 4 · 64 · 128 + o 128 · 64 = 40,960
    # and bias_u/v 2 · 128 = 256; the conv module 2 · 64² + 64² + 5 · 64 + 4 · 64 + biases 2 · 64 + 64 + 64 =
    # 13,120; LayerNorms 640: 79,552, × 2 = 159,104. Projection 64 + 64 · 48 + 48 + 48 · 32 + 32 = 4,752. 174,392.
    (TINY_SOUND, 32, 174_392),
]


@pytest.mark.parametrize(("sound", "text_hidden", "params"), CASES)
def test_encoder_and_projection_by_hand(sound: dict[str, Any], text_hidden: int, params: int) -> None:
    read = parakeet_shapes(sound, text_hidden)
    assert read is not None
    shapes, vectors = read
    assert sum(shape.numel for shape in shapes) + vectors == params


def test_vllm_builds_the_same_encoder(vllm_meta_build: VllmMetaBuild) -> None:
    cases = [("parakeet", sound, text_hidden) for sound, text_hidden, _ in CASES]
    assert vllm_meta_build.parameter_counts(cases) == [params for *_, params in CASES]


def test_a_sound_config_vllm_cannot_build_is_a_guess() -> None:
    """vLLM's ParakeetConfig requires projection_hidden_size."""
    sound = {key: value for key, value in OMNI_SOUND.items() if key != "projection_hidden_size"}
    assert parakeet_shapes(sound, 2688) is None
    config = {
        "model_type": "NemotronH_Nano_Omni_Reasoning_V3",
        "vision_config": {"args": {"model": "vit_huge_patch16_224"}},
        "projector_hidden_size": 20_480,
        "sound_config": sound,
    }
    assert not vision_read(config)


def test_the_whole_omni_model() -> None:
    """Nemotron-3-Nano-Omni-30B-A3B-Reasoning: the reference's top-level fields and C-RADIO v4-H's args (vit_huge,
    cpe_max_size 2048, register_multiple 10, a class token for each of four teachers, T 2) over
    NVIDIA-Nemotron-3-Nano-30B-A3B's text model (31,577,940,288, tests/model/test_architecture_nemotron_h.py),
    whose sizes the reference's llm_config repeats.

    Vision: C-RADIO-H's 651,724,800 (tests/model/test_radio_towers.py) with 4 class tokens + 6 registers instead
    of 8 prefix tokens, + 2 · 1280 = 651,727,360, and the video embedder 3 · 2 · 16² · 1280 = 1,966,080; mlp1
    5120 + 5120 · 20,480 + 20,480 · 2688 = 159,912,960; sound 624,134,144 (above): 1,437,740,544. Total
    33,015,680,832 (the Hub: 33B).
    """
    config = {
        "architectures": ["NemotronH_Nano_Omni_Reasoning_V3"],
        "model_type": "NemotronH_Nano_Omni_Reasoning_V3",
        "downsample_ratio": 0.5,
        "vit_hidden_size": 1280,
        "projector_hidden_size": 20_480,
        "llm_config": published_config("nemotron-3-nano-30b-a3b"),
        "vision_config": {
            "args": {
                "model": "vit_huge_patch16_224",
                "cpe_max_size": 2048,
                "register_multiple": 10,
                "teachers": [{"name": "clip"}, {"name": "siglip"}, {"name": "dino_v2"}, {"name": "sam"}],
                "cls_token_per_teacher": True,
            },
            "patch_size": 16,
            "video_temporal_patch_size": 2,
        },
        "sound_config": OMNI_SOUND,
    }
    assert vision_read(config)
    assert quantizable_vision("NemotronH_Nano_Omni_Reasoning_V3") == ()
    counts = estimate_params(read_architecture(config, Path(".")))
    assert (counts.total, counts.vision) == (33_015_680_832, 1_437_740_544)
