"""Config-only inspection of real config.json files of current models, against model cards and published sizes.

Every expected value is a literal: from the model card, from a checkpoint's published
``model.safetensors.index.json`` ``total_size``, or worked out by hand (the arithmetic is in the
comment). The config files and where they come from are listed in tests/fixtures/configs/README.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.model.inspect_model import ModelInfo, inspect_model
from engine.plan.memory import kv_bytes_per_token, weight_bytes
from tests.plan.model_configs import model_from_config

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"


def config_only(name: str, tmp_path: Path) -> ModelInfo:
    shutil.copy(CONFIGS / f"{name}.json", tmp_path / "config.json")
    return inspect_model(tmp_path)


# name, loaded params, source of the params figure, relative tolerance
PARAMS = [
    # Research note of issue 9 §6, summed by hand from vLLM's deepseek_v2.py modules; card: "671B main model".
    ("deepseek-v3", 671_026_419_200, 0.0),
    # gpt-oss model card / paper table: 20.91B and 116.83B total parameters.
    ("gpt-oss-20b", 20_910_000_000, 0.001),
    ("gpt-oss-120b", 116_830_000_000, 0.001),
    # By hand: 48 × (18,874,368 attention + 256 qk-norm + 128·3·2048·768 experts + 128·2048 router
    # + 4096 norms) + 2 × 151,936·2048 + 2048 = 30,532,122,624 (card: 30.5B total).
    ("qwen3-30b-a3b", 30_532_122_624, 0.0),
    # Model card: 109B total parameters (text 107.77B + vision tower and projector 0.87B).
    ("llama-4-scout-17b-16e", 109_000_000_000, 0.005),
    # Hugging Face page of microsoft/phi-4: 14.7B.
    ("phi-4", 14_700_000_000, 0.005),
    # Hugging Face page of google/gemma-3-27b-it: 27.4B (vision tower included).
    ("gemma-3-27b-it", 27_400_000_000, 0.005),
    # Meta's Llama-3.1-8B: 8.03B; the GPTQ checkpoint has the same parameters.
    ("llama-3.1-8b-instruct-gptq-int4", 8_030_261_248, 0.0),
    # Qwen3-8B card: 8.2B.
    ("qwen3-8b-fp8", 8_190_000_000, 0.001),
    # By hand: Qwen2-7B text (28 × 233,057,792 with q/k/v biases + 2 × 152,064·3584 + 3,584 = 7,615,616,512)
    # + vision 676,550,144 (below) = 8,292,166,656; card of Qwen/Qwen2.5-VL-7B-Instruct: 8.29B.
    ("qwen2.5-vl-7b-instruct", 8_292_166_656, 0.0),
    # By hand: Mistral-Small-24B text (40 × 555,755,520 + 2 × 131,072·5120 + 5,120 = 23,572,403,200)
    # + vision 438,958,080 (below) = 24,011,361,280; card of Mistral-Small-3.1-24B-Instruct-2503: 24B.
    ("mistral-small-3.1-24b-instruct-2503", 24_011_361_280, 0.0),
    # By hand: the Qwen3-8B text model (8,190,735,360, as qwen3-8b above) + vision 576,388,336 (below) =
    # 8,767,123,696; card of Qwen/Qwen3-VL-8B-Instruct: 8.77B.
    ("qwen3-vl-8b-instruct", 8_767_123_696, 0.0),
    # By hand: Qwen3-30B-A3B's text model (30,532,122,624, above) + vision 538,631,408 = 31,070,754,032;
    # card of Qwen/Qwen3-VL-30B-A3B-Instruct: 31.1B.
    ("qwen3-vl-30b-a3b-instruct", 31_070_754_032, 0.0),
    # By hand: Qwen2.5-0.5B's layers with InternVL3's vocabulary, untied (24 × 14,912,384 + 2 × 151,674·896 +
    # 896 = 629,697,920) + vision 308,495,104 (below) = 938,193,024; card of OpenGVLab/InternVL3-1B: 0.9B.
    ("internvl3-1b", 938_193_024, 0.0),
    # The sum of the tensors of moonshotai/Kimi-K2.5's checkpoint (its packed INT4 experts as 60 × 384 × 3 ×
    # 7168·2048 weights, scales and shapes left out): text 1,026,408,232,448 + vision 471,143,920.
    ("kimi-k2.5", 1_026_879_376_368, 0.0),
    # LFM2 cards' table: 1,170,340,608 and 742,489,344. By hand (1.2B): tied embedding 65,536·2048 =
    # 134,217,728; 10 conv layers of 16,783,360 (in_proj 2048×6144, out_proj 2048², conv 2048·3); 6 attention
    # layers of 10,485,888 (qkv 2048×3072, out_proj 2048², q/k norms 128); 16 MLPs 3·2048·8192 (block_ff_dim
    # 12,288 auto-adjusted) = 805,306,368; norms 16·4096 + 2048.
    ("lfm2-1.2b", 1_170_340_608, 0.0),
    ("lfm2-700m", 742_489_344, 0.0),
]


@pytest.mark.parametrize(("name", "params", "tolerance"), PARAMS, ids=[row[0] for row in PARAMS])
def test_loaded_parameters(name: str, params: int, tolerance: float, tmp_path: Path) -> None:
    model = config_only(name, tmp_path)
    assert model.params == pytest.approx(params, rel=tolerance, abs=0)


# name, loaded weight bytes as the checkpoint stores them, tolerance; sources in the comments.
WEIGHT_BYTES = [
    # Published model.safetensors.index.json total_size of openai/gpt-oss-20b and -120b (MXFP4 experts
    # at 4.25 bits, attention, router, embeddings and lm_head in bf16).
    ("gpt-oss-20b", 13_761_264_768, 0.0),
    ("gpt-oss-120b", 65_248_815_744, 0.0),
    # By hand: every Linear of the 61 layers in FP8 (1 B) plus a float32 scale per 128×128 block,
    # embeddings, lm_head, norms and routers in bf16 = 673,150,582,112 (MTP layer not loaded).
    ("deepseek-v3", 673_150_582_112, 0.0),
    # By hand: 6,979,321,856 linear weights × 0.5 B + fp16 scales and packed zeros per 128 inputs
    # (109,051,904 + 27,262,976) + g_idx (4,980,736) + fp16 embeddings/lm_head/norms (2,101,878,784);
    # the published hugging-quants GPTQ-INT4 checkpoint is 5.73 GB.
    ("llama-3.1-8b-instruct-gptq-int4", 5_732_835_328, 0.0),
    # Same without g_idx (AWQ GEMM): 5,727,854,592; published 5.73 GB.
    ("llama-3.1-8b-instruct-awq-int4", 5_727_854_592, 0.0),
    # compressed-tensors FP8 per-tensor (RedHatAI Meta-Llama-3.1-8B-Instruct-FP8): published 9.08 GB.
    ("llama-3.1-8b-instruct-fp8", 9_080_000_000, 0.03),
    # By hand: 6,945,767,424 FP8 weights + 1,695,744 block scales + 2,489,935,872 bf16 rest.
    ("qwen3-8b-fp8", 9_437_399_040, 0.0),
    # bf16: 2 bytes × 108,641,793,536 parameters.
    ("llama-4-scout-17b-16e", 217_283_587_072, 0.0),
    # moonshotai/Kimi-K2.5's 208,550 tensors sum to 595,148,192,736 B (554.27 GiB): INT4 experts with a bf16 scale
    # per 32; its dense first-layer MLP, attention, shared experts and the MoonViT bf16 (kimi_k25.py keeps the
    # tower 16-bit under compressed-tensors). quant-tui's count is 138,240 B (0.00002 %) over.
    ("kimi-k2.5", 595_148_192_736, 1e-6),
    # LiquidAI/LFM2-1.2B's model.safetensors is 2,340,697,936 B: 2 × 1,170,340,608 bf16 + a 16,720 B header.
    ("lfm2-1.2b", 2_340_681_216, 0.0),
]


@pytest.mark.parametrize(
    ("name", "expected", "tolerance"), WEIGHT_BYTES, ids=[row[0] for row in WEIGHT_BYTES]
)
def test_weight_bytes_of_the_checkpoint_format(
    name: str, expected: int, tolerance: float, tmp_path: Path
) -> None:
    model = config_only(name, tmp_path)
    assert model.loaded_weight_bytes == pytest.approx(expected, rel=tolerance, abs=0)
    assert model.quantization is not None or model.weight_layout.startswith("bfloat16")


def test_deepseek_v3_mtp_is_counted_apart(tmp_path: Path) -> None:
    model = config_only("deepseek-v3", tmp_path)
    # Research note §6: the MTP layer with its own embed_tokens and head copies is 13.46B; the card
    # says 685B = 671B main + 14B MTP.
    assert model.mtp_params == pytest.approx(13.46e9, rel=0.001)
    # The published checkpoint (688,586,727,753 bytes) minus what vLLM loads is the MTP layer:
    # ~11.6B in FP8 plus two bf16 copies of 129,280 × 7168 ≈ 15.3 GB.
    assert 15.0e9 < 688_586_727_753 - model.loaded_weight_bytes < 15.8e9
    # Card: 37B activated parameters per token.
    assert model.active_params == pytest.approx(37.5e9, rel=0.01)


@pytest.mark.parametrize(
    ("name", "tensor_parallel", "kv_bytes"),
    [
        ("deepseek-v3", 1, 70_272),  # (512 + 64) × 2 B × 61 layers
        ("deepseek-v3", 8, 70_272),  # the latent is not split over TP ranks
        ("gpt-oss-20b", 1, 49_152),  # 2 × 24 × 8 × 64 × 2
        ("gpt-oss-120b", 1, 73_728),  # 2 × 36 × 8 × 64 × 2
        ("qwen3-30b-a3b", 1, 98_304),  # 2 × 48 × 4 × 128 × 2
        ("qwen3-30b-a3b", 8, 24_576),  # 4 KV heads: one per rank beyond TP 4
        ("llama-4-scout-17b-16e", 1, 196_608),  # 2 × 48 × 8 × 128 × 2
        ("phi-4", 1, 204_800),  # 2 × 40 × 10 × 128 × 2
        ("lfm2-1.2b", 1, 12_288),  # only the 6 attention layers: 2 × 6 × 8 × 64 × 2
        ("lfm2-1.2b", 8, 1_536),  # one KV head per rank
    ],
)
def test_kv_bytes_per_token(name: str, tensor_parallel: int, kv_bytes: int, tmp_path: Path) -> None:
    assert kv_bytes_per_token(config_only(name, tmp_path), 2, tensor_parallel) == kv_bytes


def test_deepseek_v3_fp8_kv_halves_the_latent(tmp_path: Path) -> None:
    assert kv_bytes_per_token(config_only("deepseek-v3", tmp_path), 1, 8) == 35_136  # 576 × 1 B × 61


@pytest.mark.parametrize(
    ("name", "summary"),
    [
        ("deepseek-v3", "MLA latent 576 (512 + 64 rope) × 61 layers (+1 MTP, not loaded)"),
        ("gpt-oss-20b", "GQA 8 KV heads × 64, layers: 12 sliding (128) + 12 full"),
        ("llama-4-scout-17b-16e", "GQA 8 KV heads × 128, layers: 36 chunked (8192) + 12 full"),
        ("gemma-3-27b-it", "GQA 16 KV heads × 128, layers: 52 sliding (1024) + 10 full"),
        ("mistral-7b-v0.1", "GQA 8 KV heads × 128, layers: 32 sliding (4096)"),
        ("qwen3-30b-a3b", "GQA 4 KV heads × 128 × 48 layers"),
        ("lfm2-1.2b", "GQA 8 KV heads × 64, layers: 10 linear (SHORT CONV) + 6 full"),
    ],
)
def test_attention_summary_says_what_is_cached(name: str, summary: str, tmp_path: Path) -> None:
    assert config_only(name, tmp_path).attention_summary == summary


@pytest.mark.parametrize(
    ("name", "experts", "moe_layers", "vision_params"),
    [
        ("deepseek-v3", 256, 58, 0),  # first_k_dense_replace 3 of 61
        ("qwen3-30b-a3b", 128, 48, 0),
        ("gpt-oss-20b", 32, 24, 0),
        # By hand: 34 ViT blocks of 23,807,872 + patch, class and position embeddings, LayerNorms
        # (1,647,360) + pixel-shuffle MLP (39,845,888) + projector 4096 × 5120 = 871,932,416.
        ("llama-4-scout-17b-16e", 16, 48, 871_932_416),
    ],
)
def test_moe_and_vision_layout(
    name: str, experts: int, moe_layers: int, vision_params: int, tmp_path: Path
) -> None:
    model = config_only(name, tmp_path)
    assert model.moe is not None
    assert (model.moe.num_experts, len(model.moe.moe_layers)) == (experts, moe_layers)
    assert model.vision_params == vision_params


# name, vision tower + projector parameters vLLM loads, summed by hand from its model files.
VISION = [
    # qwen2_5_vl.py: Conv3d 3·2·14·14 = 1,176 → 1,280 (no bias) 1,505,280; 32 blocks of 19,702,200 (qkv
    # 1280×3840 + 3,840, proj 1280² + 1,280, gate_up 1280×6840 + 6,840, down 3420×1280 + 1,280, two RMSNorms
    # 2,560) = 630,470,400; merger ln_q 1,280 + 5120² + 5,120 + 5120×3584 + 3,584 = 44,574,464. 676,550,144.
    ("qwen2.5-vl-7b-instruct", 676_550_144),
    # pixtral.py + mistral3.py: patch 3·14²·1024 = 602,112, ln_pre 1,024, 24 layers (feature layer -1) of
    # 16,779,264 (q/k/v/o 4 × 1024², gate_up 1024×8192, down 4096×1024, two RMSNorms 2,048) = 402,702,336;
    # projector norm 1,024 + merging_layer 4096×1024 + linear_1 1024×5120 + linear_2 5120², no biases =
    # 35,652,608. 438,958,080.
    ("mistral-small-3.1-24b-instruct-2503", 438_958_080),
    # qwen3_vl.py: Conv3d 3·2·16² = 1,536 → 1,152 with a bias 1,770,624; position table 2,304 × 1,152 =
    # 2,654,208; 27 blocks of 15,239,504 (qkv 1152×3456 + 3,456, proj 1152² + 1,152, fc1 1152×4304 + 4,304,
    # fc2 4304×1152 + 1,152, two LayerNorms 4,608) = 411,466,608; merger LayerNorm 2,304 + 4608² + 4,608 +
    # 4608×4096 + 4,096 = 40,119,040; 3 deepstack mergers of 40,125,952 (LayerNorm over 4,608: 9,216).
    # 576,388,336.
    ("qwen3-vl-8b-instruct", 576_388_336),
    # The same tower, out_hidden_size 2,048: each of the 4 mergers' fc2 is 4608×2048 + 2,048 = 9,439,232
    # instead of 18,878,464: 576,388,336 - 4 × 9,439,232 = 538,631,408.
    ("qwen3-vl-30b-a3b-instruct", 538_631_408),
    # qwen3_5.py builds the same Qwen3_VisionTransformer for Qwen3.5-9B, with no deepstack mergers:
    # 576,388,336 - 3 × 40,125,952 = 456,010,480.
    ("qwen3.5-9b", 456_010_480),
    # mllama4.py, Llama-4-Scout (sum in tests/model/test_llama4_vision.py): 871,932,416.
    ("llama-4-scout-17b-16e", 871_932_416),
    # siglip.py, built whole by gemma3_mm.py: 27 blocks of 15,239,504 (q/k/v/out 4 × 1152² + 4,608, fc1
    # 1152×4304 + 4,304, fc2 4304×1152 + 1,152, two LayerNorms 4,608) = 411,466,608; patch 3·14² → 1,152 with a
    # bias 678,528; positions (896/14)² = 4,096 × 1,152 = 4,718,592; post_layernorm 2,304; projector
    # 1152×5376 = 6,193,152 and its soft-embedding norm 1,152. 423,060,336.
    ("gemma-3-27b-it", 423_060_336),
    # clip.py for llava.py (feature layer -2, no post_layernorm): 23 blocks of 12,596,224 (q/k/v/out 4 × 1024²
    # + 4,096, fc1 1024×4096 + 4,096, fc2 4096×1024 + 1,024, two LayerNorms 4,096) = 289,713,152; patch
    # 588×1024 = 602,112 (no bias), class 1,024, positions 577 × 1,024 = 590,848, pre_layrnorm 2,048;
    # projector 1024×4096 + 4,096 + 4096² + 4,096 = 20,979,712. 311,888,896.
    ("llava-mistral-7b", 311_888_896),
    # intern_vit.py + internvl.py (select_layer -1: all 24 layers, no final norm): 24 blocks of 12,598,272
    # (qkv 1024×3072 + 3,072, proj 1024² + 1,024, fc1 1024×4096 + 4,096, fc2 4096×1024 + 1,024, two LayerNorms
    # 4,096, ls1/ls2 2,048) = 302,358,528; class token 1,024, patch 588×1024 + 1,024 = 603,136, positions
    # ((448/14)² + 1) × 1,024 = 1,049,600: InternViT-300M's 304,012,288. mlp1 over 1024·2² = 4,096: LayerNorm
    # 8,192 + 4096×896 + 896 + 896² + 896 = 4,482,816. 308,495,104.
    ("internvl3-1b", 308_495_104),
    # kimi_k25_vit.py's MoonViT3d and KimiK25MultiModalProjector (sum in tests/model/test_moonvit_towers.py),
    # equal to the checkpoint's vision_tower.* and mm_projector.* tensors: 471,143,920.
    ("kimi-k2.5", 471_143_920),
]


@pytest.mark.parametrize(("name", "vision_params"), VISION, ids=[row[0] for row in VISION])
def test_vision_tower_and_projector(name: str, vision_params: int, tmp_path: Path) -> None:
    assert config_only(name, tmp_path).vision_params == vision_params


def test_llava_next_loads_its_tower_to_the_feature_layer(tmp_path: Path) -> None:
    """LLaVA-v1.6-Mistral-7B as llava_next: text vocab 32,064, image_newline; HF's page says 7.57B stored.

    By hand: Mistral-7B 7,241,732,096 + 2 × 64 × 4,096 for the larger vocabulary = 7,242,256,384; the LLaVA
    tower and projector above 311,888,896 + image_newline 4,096. 7,554,149,376: the stored 7.57B less the CLIP
    layer (12,596,224) and post_layernorm (2,048) that vLLM does not build.
    """
    llava_next = {"model_type": "llava_next", "architectures": ["LlavaNextForConditionalGeneration"]}
    model = model_from_config(tmp_path, "llava-mistral-7b", llava_next, {"vocab_size": 32_064})
    assert model.params == 7_554_149_376
    assert model.vision_params == 311_892_992


def test_prequantized_checkpoint_is_planned_at_its_own_size(tmp_path: Path) -> None:
    """The issue's gpt-oss-20b case: 12.8 GB when every Linear is taken as MXFP4, 13.76 GB for real."""
    model = config_only("gpt-oss-20b", tmp_path)
    assert model.quantization is not None and model.quantization.recommend_as == "mxfp4"
    assert weight_bytes(model, "mxfp4").total == 13_761_264_768
