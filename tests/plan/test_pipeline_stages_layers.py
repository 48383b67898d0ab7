"""Pipeline stages hold their own layers' bytes: dense vs MoE layers (DeepSeek, Llama-4, Qwen3-MoE), headers, padded vocabularies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.model.inspect_model import ModelInfo, inspect_model
from engine.plan.memory import plan_gpu, stage_weights_bytes, weight_bytes
from engine.plan.pipeline_stages import pipeline_stages
from tests.plan.model_configs import model_from_config, modelopt_mixed_layers, modelopt_mixed_quant

# DeepSeek-V3 (tests/fixtures/configs/deepseek-v3.json) by hand, h 7,168, 128 heads:
#   MLA attention: q_a 7,168 × 1,536 + q_b 1,536 × 24,576 (128 × (128 + 64)) + kv_a 7,168 × 576
#     + kv_b 512 × 32,768 (128 × (128 + 128)) + o 16,384 × 7,168 = 187,105,280 parameters;
#     vectors: q_a/kv_a norms 1,536 + 512, two layer norms 2 × 7,168 = 16,384.
#   dense layer (layers 0-2, first_k_dense_replace 3): MLP 3 × 7,168 × 18,432 = 396,361,728
#     → 583,483,392 parameters.
#   MoE layer (3-60): 256 experts × 3 × 7,168 × 2,048 = 11,274,289,152, shared expert 44,040,192,
#     router 7,168 × 256 = 1,835,008, e_score_correction_bias 256 → 11,507,286,272 parameters.
#   The MTP layer (num_nextn_predict_layers 1) is not loaded and in no stage.
# As stored (FP8, 128 × 128 blocks, one float32 scale each; the rest bf16):
#   attention scale blocks 12·56 + 192·12 + 5·56 + 256·4 + 56·128 = 11,448; dense MLP 3 × 144·56 = 24,192;
#   MoE: 257 experts (routed + shared) × (32·56 gate/up + 56·16 down) = 690,816.
#   dense layer = 583,467,008 (FP8) + 35,640 × 4 + 16,384 × 2 = 583,642,336 B
#   MoE layer  = 11,505,434,624 (FP8) + 702,264 × 4 + (1,835,008 + 256 + 16,384) × 2 = 11,511,946,976 B
#   embed_tokens = lm_head = 129,280 × 7,168 × 2 = 1,853,358,080 B (129,280 = 64 × 2,020: no padding);
#   final norm 14,336 B.
# P 2: 61 layers → 31 + 30 (the remainder to the second-to-last).
#   stage 0: 3 dense + 28 MoE + embed_tokens = 325,938,800,416 B
#   stage 1: 30 MoE + lm_head + norm         = 347,211,781,696 B
# (An even split by layer count said 342,062,528,574 and 331,088,053,539: stage 0 overstated by
# 16,123,728,158 B, 2.0 GB on each of its 8 GPUs, and stage 1 understated by as much.)
DENSE_FP8, MOE_FP8, VOCAB_DS, NORM_DS = 583_642_336, 11_511_946_976, 1_853_358_080, 14_336
DENSE_BF16, MOE_BF16 = 583_483_392 * 2, 11_507_286_272 * 2


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    return model_from_config(tmp_path_factory.mktemp("deepseek"), "deepseek-v3")


@pytest.mark.parametrize(
    ("method", "stages", "per_stage"),
    [
        ("fp8", 2, [3 * DENSE_FP8 + 28 * MOE_FP8 + VOCAB_DS, 30 * MOE_FP8 + VOCAB_DS + NORM_DS]),
        ("fp8", 1, [3 * DENSE_FP8 + 58 * MOE_FP8 + 2 * VOCAB_DS + NORM_DS]),
        ("bf16", 2, [3 * DENSE_BF16 + 28 * MOE_BF16 + VOCAB_DS, 30 * MOE_BF16 + VOCAB_DS + NORM_DS]),
        # 61 → 15, 15, 16, 15: the first stage has the 3 dense layers and 12 MoE ones.
        (
            "fp8",
            4,
            [
                3 * DENSE_FP8 + 12 * MOE_FP8 + VOCAB_DS,
                15 * MOE_FP8,
                16 * MOE_FP8,
                15 * MOE_FP8 + VOCAB_DS + NORM_DS,
            ],
        ),
    ],
)
def test_deepseek_v3_stages_hold_their_own_dense_and_moe_layers(
    deepseek: ModelInfo, method: str, stages: int, per_stage: list[int]
) -> None:
    weights = weight_bytes(deepseek, method)
    built = pipeline_stages(deepseek.num_layers, stages, deepseek.tie_word_embeddings)
    assert [stage_weights_bytes(deepseek, weights, stage) for stage in built] == per_stage
    assert sum(per_stage) == weights.total  # untied, unpadded: no matrix is built twice


# DeepSeek-V3 FP8 on 2 boxes × 8 H200 (P 2, T 8; 143,771 MiB, 0.92 → 138,694,434,489 B requested),
# 32,768 context, bf16 KV, 16,384 batched tokens, 1,024 sequences, CUDA graphs (1 GiB), NCCL 2.1 GiB:
#   peak: hidden 16,384 × 7,168 × 5 B = 587,202,560 + fused MoE 16,384 × 8 × (7,168 + 256) × 2 B =
#     1,946,157,056; the last stage adds the sampler 1,024 × 129,280 × 14 B = 1,853,358,080.
# Block 16: FLASH_ATTN_MLA (SM90, bf16 latent) precedes FlashMLA's 64 (platforms/cuda.py priorities).
#   stage 0: 325,938,800,416 / 8 = 40,742,350,052 → 92,090,125,167 B / (31 × 16 × 1,152) = 161,168 blocks
#   stage 1: 347,211,781,696 / 8 = 43,401,472,712 → 87,577,644,427 B / (30 × 18,432) = 158,379 blocks
# The last stage is the tightest (the even split had said the first): 158,379 / 2,048 blocks a
# request = 77.33x, 158,379 × 16 = 2,534,064 tokens.
def test_deepseek_v3_on_two_boxes_of_eight_h200_is_held_to_the_last_stage(deepseek: ModelInfo) -> None:
    h200 = 143_771 * 1024**2
    plan = plan_gpu(
        deepseek, weight_bytes(deepseek, "fp8"), h200, 32768, 2, 8, 2, 16384, 1024, compute_capability=(9, 0)
    )
    assert plan.weights_bytes == 43_401_472_712
    assert plan.kv_budget_bytes == 87_577_644_427
    assert (plan.capacity.num_blocks, plan.capacity.bytes_per_block) == (158_379, 30 * 18_432)
    assert (plan.capacity.tokens, plan.capacity.logged_concurrency) == (2_534_064, "77.33")


# Llama-4 with interleave_moe_layer_step 2 (Maverick's layout on Scout's shape), h 5,120, 40 heads,
# 8 KV heads of 128: attention 2 × 5,120² + 2 × 5,120 × 1,024 = 62,914,560, norms 10,240.
#   dense (even layers): MLP 3 × 5,120 × 16,384 (intermediate_size_mlp) → 314,583,040 parameters
#   MoE (odd layers): 16 experts × 3 × 5,120 × 8,192 + shared 125,829,120 + router 81,920 → 2,202,101,760
# Qwen3-30B-A3B with mlp_only_layers [0, 1]: attention 2 × 2,048 × 4,096 + 2 × 2,048 × 512 = 18,874,368,
# q/k norms 256, norms 4,096.
#   dense (0, 1): MLP 3 × 2,048 × 6,144 → 56,627,456; MoE: 128 × 3 × 2,048 × 768 + router 262,144 → 623,120,640
# P 2: 48 layers → 24 + 24. Alternating layers put the same mix on both halves, so the stages differ
# by the final norm only (untied; Llama-4's vision tower is on both); Qwen3's two dense layers are on
# the first, which is 2 × (623,120,640 − 56,627,456) × 2 B = 2,265,972,736 B lighter.
@pytest.mark.parametrize(
    ("name", "changes", "first_layers", "last_minus_first"),
    [
        ("llama-4-scout-17b-16e", {"interleave_moe_layer_step": 2}, [314_583_040, 2_202_101_760] * 2, 10_240),
        ("llama-4-scout-17b-16e", {}, [2_202_101_760] * 4, 10_240),  # Scout: step 1, every layer MoE
        ("qwen3-30b-a3b", {"mlp_only_layers": [0, 1]}, [56_627_456] * 2 + [623_120_640] * 2, 2_265_976_832),
        (
            "qwen3-30b-a3b",
            {"decoder_sparse_step": 2},
            [56_627_456, 623_120_640] * 2,
            4_096,
        ),  # (i + 1) % 2 == 0
    ],
)
def test_each_layer_is_sized_as_its_mlp_is_built(
    tmp_path: Path, name: str, changes: dict[str, object], first_layers: list[int], last_minus_first: int
) -> None:
    model = model_from_config(tmp_path, name, text_changes=changes)
    assert list(model.layer_params[:4]) == first_layers
    weights = weight_bytes(model, "bf16")
    built = pipeline_stages(model.num_layers, 2, model.tie_word_embeddings)
    first, last = (stage_weights_bytes(model, weights, stage) for stage in built)
    assert last - first == last_minus_first


def _write_fp8_moe_checkpoint(folder: Path) -> None:
    """A 2-layer Qwen3-MoE-shaped FP8 checkpoint: layer 0 dense (mlp_only_layers), layer 1 eight experts."""
    import torch
    from safetensors.torch import save_file

    h, inter, expert, head = 256, 512, 128, 128
    config = {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "hidden_size": h,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": head,
        "intermediate_size": inter,
        "moe_intermediate_size": expert,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [0],
        "vocab_size": 1024,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]},
    }
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    tensors: dict[str, torch.Tensor] = {}

    def fp8(name: str, rows: int, cols: int) -> None:
        tensors[f"{name}.weight"] = torch.zeros(rows, cols, dtype=torch.float8_e4m3fn)
        tensors[f"{name}.weight_scale_inv"] = torch.ones(-(-rows // 128), -(-cols // 128))

    def bf16(name: str, *shape: int) -> None:
        tensors[name] = torch.zeros(*shape, dtype=torch.bfloat16)

    for layer in range(2):
        prefix = f"model.layers.{layer}"
        bf16(f"{prefix}.input_layernorm.weight", h)
        bf16(f"{prefix}.post_attention_layernorm.weight", h)
        bf16(f"{prefix}.self_attn.q_norm.weight", head)
        bf16(f"{prefix}.self_attn.k_norm.weight", head)
        fp8(f"{prefix}.self_attn.q_proj", 2 * head, h)
        fp8(f"{prefix}.self_attn.k_proj", head, h)
        fp8(f"{prefix}.self_attn.v_proj", head, h)
        fp8(f"{prefix}.self_attn.o_proj", h, 2 * head)
    for name in ("gate_proj", "up_proj"):
        fp8(f"model.layers.0.mlp.{name}", inter, h)
    fp8("model.layers.0.mlp.down_proj", h, inter)
    bf16("model.layers.1.mlp.gate.weight", 8, h)
    for index in range(8):
        for name in ("gate_proj", "up_proj"):
            fp8(f"model.layers.1.mlp.experts.{index}.{name}", expert, h)
        fp8(f"model.layers.1.mlp.experts.{index}.down_proj", h, expert)
    bf16("model.embed_tokens.weight", 1024, h)
    bf16("lm_head.weight", 1024, h)
    bf16("model.norm.weight", h)
    save_file(tensors, str(folder / "model.safetensors"))


# The checkpoint above, by hand from the bytes its tensors take:
#   both layers: norms 2 × 512 + q/k norms 2 × 256; q 65,536 + 16 (2 × 2 scales × 4 B), k and v 32,768 + 8
#     each, o 65,536 + 16 → 198,192 B
#   layer 0: + gate, up 131,072 + 32 each, down 131,072 + 32 → 591,504 B
#   layer 1: + router 8 × 256 × 2 = 4,096 + 8 experts × (2 × (32,768 + 8) + 32,768 + 8) → 988,912 B
#   embed_tokens = lm_head = 1,024 × 256 × 2 = 524,288 B; final norm 512 B.
# P 2 → one layer each: 591,504 + 524,288 = 1,115,792 and 988,912 + 524,288 + 512 = 1,513,712
# (split by layer count: 1,314,496 and 1,315,008).
def test_a_checkpoints_headers_give_each_stage_its_layers_bytes(tmp_path: Path) -> None:
    _write_fp8_moe_checkpoint(tmp_path / "fp8-moe")
    model = inspect_model(tmp_path / "fp8-moe")
    assert model.layer_bytes == (591_504, 988_912)
    weights = weight_bytes(model, "fp8")  # served as it is stored
    assert weights.total == 591_504 + 988_912 + 2 * 524_288 + 512
    built = pipeline_stages(model.num_layers, 2, model.tie_word_embeddings)
    assert [stage_weights_bytes(model, weights, stage) for stage in built] == [1_115_792, 1_513_712]


# vLLM's VocabParallelEmbedding and ParallelLMHead pad the vocabulary to a multiple of 64
# (pad_vocab_size): Llama-3.1-8B's shape with 32,001 tokens allocates 32,064 rows, 63 × 4,096 × 2 =
# 516,096 B more per matrix than the checkpoint holds. One layer: 218,112,000 parameters = 436,224,000 B;
# the checkpoint's matrix 32,001 × 4,096 × 2 = 262,152,192 B, the allocated one 262,668,288 B.
#   P 1: 32 layers + 2 matrices + norm 8,192 = 14,483,480,576 B, + 2 × 516,096 = 14,484,512,768
#   P 2: 16 × 436,224,000 + 262,668,288 = 7,242,252,288 and + norm 8,192 = 7,242,260,480
@pytest.mark.parametrize(
    ("stages", "per_stage"),
    [(1, [14_484_512_768]), (2, [7_242_252_288, 7_242_260_480])],
)
def test_a_padded_vocabulary_is_counted_as_allocated(
    tmp_path: Path, stages: int, per_stage: list[int]
) -> None:
    model = model_from_config(tmp_path, "llama-3.1-8b", text_changes={"vocab_size": 32_001})
    weights = weight_bytes(model, "bf16")
    assert weights.total == 14_483_480_576
    built = pipeline_stages(model.num_layers, stages, model.tie_word_embeddings)
    assert [stage_weights_bytes(model, weights, stage) for stage in built] == per_stage


# The 4-layer ModelOpt MIXED_PRECISION Llama of tests/model/test_modelopt_config.py (layers 0-1 FP8, 2-3 NVFP4:
# 218,120,248 and 122,699,832 B each, by hand there), P 2 → layers 0-1 and 2-3:
#   stage 0: 2 × 218,120,248 + embed_tokens 1,050,673,152 (128,256 = 64 × 2,004: no padding) = 1,486,913,648 B
#   stage 1: 2 × 122,699,832 + lm_head 1,050,673,152 + final norm 8,192                  = 1,296,081,008 B
# Reversed (0-1 NVFP4, 2-3 FP8): stage 0 2 × 122,699,832 + 1,050,673,152 = 1,296,072,816 B,
#   stage 1 2 × 218,120,248 + 1,050,673,152 + 8,192 = 1,486,921,840 B.
# (Averaged layers had said 2 × 170,410,040 = 340,820,080 B of layers on each stage, 95,420,416 B off either way.)
@pytest.mark.parametrize(
    ("algos", "per_stage"),
    [
        (["FP8", "FP8", "NVFP4", "NVFP4"], [1_486_913_648, 1_296_081_008]),
        (["NVFP4", "NVFP4", "FP8", "FP8"], [1_296_072_816, 1_486_921_840]),
    ],
)
def test_a_mixed_modelopt_checkpoints_stages_hold_their_own_layers_algos(
    tmp_path: Path, algos: list[str], per_stage: list[int]
) -> None:
    quant = modelopt_mixed_quant(modelopt_mixed_layers(algos))
    model = model_from_config(
        tmp_path, "llama-3.1-8b", {"quantization_config": quant}, {"num_hidden_layers": 4}
    )
    weights = weight_bytes(model, "modelopt-mixed")
    built = pipeline_stages(model.num_layers, 2, model.tie_word_embeddings)
    assert [stage_weights_bytes(model, weights, stage) for stage in built] == per_stage


def test_a_module_a_mixed_layer_does_not_list_stays_16_bit_in_that_layer(tmp_path: Path) -> None:
    # Both layers FP8 (218,120,248 B each, above), but quantized_layers leaves out layer 0's down_proj:
    # vLLM builds it unquantized (ModelOptMixedPrecisionConfig.get_quant_method). Its 14,336 × 4,096 =
    # 58,720,256 weights take 117,440,512 B at bf16 instead of 58,720,256 + two float32 scales = 58,720,264:
    # layer 0 = 218,120,248 + 58,720,248 = 276,840,496 B. The layers then add up to the loaded weights
    # less the two vocabulary matrices (1,050,673,152 each) and the final norm (8,192).
    layers = modelopt_mixed_layers(["FP8", "FP8"])
    del layers["model.layers.0.mlp.down_proj"]
    quant = modelopt_mixed_quant(layers)
    model = model_from_config(
        tmp_path, "llama-3.1-8b", {"quantization_config": quant}, {"num_hidden_layers": 2}
    )
    assert model.layer_bytes == (276_840_496, 218_120_248)
    assert sum(model.layer_bytes) == model.loaded_weight_bytes - 2 * 1_050_673_152 - 8_192
