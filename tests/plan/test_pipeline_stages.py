"""Pipeline stages as vLLM 0.32 builds them, and the per-rank memory and KV cache of the tightest stage."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from engine.errors import QuantTuiError
from engine.model.architecture import AttentionLayout, LayerAttention
from engine.model.inspect_model import ModelInfo
from engine.plan.gpu_memory import activation_peak_bytes
from engine.plan.kv_cache import kv_capacity_for, kv_groups
from engine.plan.memory import plan_gpu, stage_weights_bytes, weight_bytes
from engine.plan.pipeline_stages import (
    check_layer_partition,
    layer_partition,
    parse_layer_partition,
    pipeline_stages,
    vocab_matrices,
)
from tests.plan.model_configs import model_from_config

GIB = 1024**3
S: LayerAttention = "sliding"
F: LayerAttention = "full"


# get_pp_indices: num_layers // P each, then partitions[-i] += 1 for i in 2 .. remainder + 1.
@pytest.mark.parametrize(
    ("num_layers", "stages", "partition"),
    [
        (80, 1, (80,)),
        (80, 2, (40, 40)),
        (80, 3, (27, 27, 26)),  # 26 each, remainder 2 to stages -2 and -3
        (81, 4, (20, 20, 21, 20)),  # remainder 1 to the second-to-last
        (7, 3, (2, 3, 2)),
        (10, 4, (2, 3, 3, 2)),
        (5, 4, (1, 1, 2, 1)),
        (2, 4, (0, 1, 1, 0)),  # more stages than layers: vLLM leaves the ends empty
    ],
)
def test_default_partition_is_get_pp_indices(
    num_layers: int, stages: int, partition: tuple[int, ...]
) -> None:
    assert layer_partition(num_layers, stages) == partition
    ranges = [stage.layers for stage in pipeline_stages(num_layers, stages, tie_word_embeddings=False)]
    assert [len(layers) for layers in ranges] == list(partition)
    assert ranges[0].start == 0 and ranges[-1].stop == num_layers
    assert all(a.stop == b.start for a, b in itertools.pairwise(ranges))


@pytest.mark.parametrize(
    ("stages", "tied", "holds"),
    [
        # (embed_tokens, lm_head, vocab matrices in memory) per stage
        (1, False, [(True, True, 2)]),
        (1, True, [(True, True, 1)]),  # lm_head is embed_tokens
        (2, False, [(True, False, 1), (False, True, 1)]),
        (2, True, [(True, False, 1), (True, True, 1)]),  # llama.py: the last rank ties to its own copy
        (3, False, [(True, False, 1), (False, False, 0), (False, True, 1)]),
    ],
)
def test_which_stage_holds_the_vocabulary(
    stages: int, tied: bool, holds: list[tuple[bool, bool, int]]
) -> None:
    built = pipeline_stages(12, stages, tie_word_embeddings=tied)
    assert [(s.holds_embedding, s.holds_lm_head, s.vocab_matrices) for s in built] == holds


def test_layer_partition_override_is_read_as_vllm_does() -> None:
    assert parse_layer_partition("30, 50") == (30, 50)  # int(" 50") as vLLM's int() reads it
    assert check_layer_partition((30, 50), 80, 2) == (30, 50)
    assert [len(s.layers) for s in pipeline_stages(80, 2, False, (30, 50))] == [30, 50]


# What vLLM's get_pp_indices refuses (int() of each part, one count per stage, summing to the layers),
# plus a stage of 0 layers, which quant-tui refuses before vLLM sizes a KV cache for it.
@pytest.mark.parametrize(
    ("text", "words", "default_named"),
    [
        ("30;50", "not a comma-separated list", False),
        ("", "not a comma-separated list", False),  # set but empty: int("") fails in vLLM too
        ("0,80", "without layers", False),
        ("40,40,0", "without layers", False),
        ("40,40,1", "each of the 2 pipeline stages", True),
        ("30,40", "80 in all", True),
        ("80", "each of the 2 pipeline stages", True),
    ],
)
def test_a_bad_layer_partition_is_one_line(text: str, words: str, default_named: bool) -> None:
    with pytest.raises(QuantTuiError, match=words) as raised:
        check_layer_partition(parse_layer_partition(text), 80, 2)
    assert "\n" not in str(raised.value) and "VLLM_PP_LAYER_PARTITION" in str(raised.value)
    assert ('"40,40"' in str(raised.value)) is default_named  # the default split, once the model is known


# Llama-3.1-70B in bf16, by hand: embed_tokens = lm_head = 128,256 × 8,192 × 2 B = 2,101,346,304 B;
# final norm 8,192 × 2 B = 16,384 B; one decoder layer 855,654,400 parameters (q, o 8,192²; k, v
# 8,192 × 1,024; gate, up, down 8,192 × 28,672; two norms) = 1,711,308,800 B.
LAYER_70B, VOCAB_70B, NORM_70B = 1_711_308_800, 2_101_346_304, 16_384


@pytest.mark.parametrize(
    ("stages", "per_stage"),
    [
        (1, [141_107_412_992]),  # 70,553,706,496 parameters × 2 B, whole
        (2, [40 * LAYER_70B + VOCAB_70B, 40 * LAYER_70B + VOCAB_70B + NORM_70B]),
        (3, [27 * LAYER_70B + VOCAB_70B, 27 * LAYER_70B, 26 * LAYER_70B + VOCAB_70B + NORM_70B]),
    ],
)
def test_70b_stage_weights(llama70b: ModelInfo, stages: int, per_stage: list[int]) -> None:
    weights = weight_bytes(llama70b, "bf16")
    built = pipeline_stages(llama70b.num_layers, stages, llama70b.tie_word_embeddings)
    assert [stage_weights_bytes(llama70b, weights, stage) for stage in built] == per_stage


def test_tied_embeddings_cost_the_last_stage_its_own_copy(tmp_path: Path) -> None:
    # Qwen2.5-0.5B (tied): 494,032,768 parameters; its embedding 151,936 × 896 × 2 B = 272,269,312 B;
    # one layer (q, o 896²; k, v 896 × 128; their 3 biases; MLP 3 × 896 × 4,864; 2 norms)
    # 14,912,384 parameters = 29,824,768 B. P 2: 12 layers each, embed_tokens on both stages.
    model = model_from_config(tmp_path, "qwen2.5-0.5b")
    assert model.params == 494_032_768 and model.tie_word_embeddings
    weights = weight_bytes(model, "bf16")
    built = pipeline_stages(model.num_layers, 2, tie_word_embeddings=True)
    first, last = (stage_weights_bytes(model, weights, stage) for stage in built)
    assert first == 12 * 29_824_768 + 272_269_312 == 630_166_528
    assert last == 12 * 29_824_768 + 272_269_312 + 1_792 == 630_168_320  # + final norm
    assert first + last == 988_065_536 + 272_269_312  # the whole model plus one more embedding


def test_the_vision_tower_is_on_every_stage(tmp_path: Path) -> None:
    # LLaVA builds its CLIP tower and projector with no pipeline check: each stage loads them.
    model = model_from_config(tmp_path, "llava-mistral-7b")
    assert model.vision_params > 300_000_000  # CLIP ViT-L/14-336 and the projector
    weights = weight_bytes(model, "bf16")
    built = pipeline_stages(model.num_layers, 2, model.tie_word_embeddings)
    first, last = (stage_weights_bytes(model, weights, stage) for stage in built)
    assert last - first == model.hidden_size * 2  # lm_head against embed_tokens: only the norm differs
    assert first + last == weights.total + model.vision_params * 2


def test_only_the_last_stage_runs_the_sampler(llama70b: ModelInfo) -> None:
    # 8,192 tokens × 8,192 hidden × 2.5 copies × 2 B = 335,544,320; sampler 256 rows × 128,256 × 14 B.
    hidden, sampler = 335_544_320, 459_669_504
    assert activation_peak_bytes(llama70b, 8192, 256, runs_sampler=False) == hidden
    assert activation_peak_bytes(llama70b, 8192, 256) == hidden + sampler


# Llama-3.1-70B bf16, P 3 × T 1, 96 GiB GPU at 0.75 (77,309,411,328 B requested), eager, 8,192
# batched tokens, 256 sequences, bf16 KV, 8,192 context; non-torch 0.07 GiB = 75,161,927 B (PP only).
# Page: 16 tokens × 2 × 8 KV heads × 128 × 2 B = 65,536 B a layer; 512 blocks per request.
#   stage 0: 48,306,683,904 weights + 335,544,320 peak → 28,592,021,177 B / (27 × 65,536) = 16,158 blocks
#   stage 1: 46,205,337,600 + 335,544,320 → 30,693,367,481 / (27 × 65,536) = 17,346
#   stage 2: 46,595,391,488 + 795,213,824 (sampler) → 29,843,644,089 / (26 × 65,536) = 17,514
# vLLM gives all three 16,158 blocks: 16,158 / 512 = 31.56x, 258,528 tokens. (An even split, 141 GB / 3
# and 27 layers everywhere, would have said 16,617 blocks.)
def test_70b_over_three_stages_is_held_to_the_first(llama70b: ModelInfo) -> None:
    weights = weight_bytes(llama70b, "bf16")
    plan = plan_gpu(llama70b, weights, 96 * GIB, 8192, 2, 1, 3, 8192, 256, 0.75, enforce_eager=True)
    assert plan.weights_bytes == 48_306_683_904
    assert plan.overhead.activations == 335_544_320
    assert plan.kv_budget_bytes == 28_592_021_177
    assert plan.kv_bytes_per_token == 27 * 4096
    assert (plan.capacity.num_blocks, plan.capacity.bytes_per_block) == (16_158, 27 * 65_536)
    assert plan.capacity.tokens == 258_528 and plan.capacity.logged_concurrency == "31.56"


# Llama-3.1-8B shape cut to 7 layers (odd): P 3 → 2, 3, 2 layers. One layer 218,112,000 parameters
# = 436,224,000 B; embedding = lm_head 128,256 × 4,096 × 2 B = 1,050,673,152 B; norm 8,192 B.
# 24 GiB at 0.5 → 12,884,901,888 B; 2,048 batched tokens (hidden peak 2,048 × 4,096 × 5 = 41,943,040),
# 128 sequences (sampler 128 × 128,256 × 14 = 229,834,752); non-torch 75,161,927; page 65,536 B a layer.
#   stage 0: 1,923,121,152 → 10,844,675,769 B / (2 × 65,536) = 82,738 blocks
#   stage 1: 1,308,672,000 → 11,459,124,921 B / (3 × 65,536) = 58,284 blocks  ← the tightest
#   stage 2: 1,923,129,344 → 10,614,832,825 B / (2 × 65,536) = 80,984 blocks
# 58,284 / 256 blocks a 4,096-token request = 227.67x, 932,544 tokens. With VLLM_PP_LAYER_PARTITION
# 3,2,2 the first stage holds 3 layers and the embedding: 1,308,672,000 + 1,050,673,152 = 2,359,345,152
# → 10,408,451,769 B / 196,608 = 52,940 blocks = 206.80x, 847,040 tokens.
@pytest.mark.parametrize(
    ("partition", "weights_bytes", "blocks", "tokens", "logged"),
    [
        (None, 1_308_672_000, 58_284, 932_544, "227.67"),
        ((3, 2, 2), 2_359_345_152, 52_940, 847_040, "206.80"),
    ],
)
def test_odd_layers_put_the_middle_stage_first_in_line(
    tmp_path: Path,
    partition: tuple[int, ...] | None,
    weights_bytes: int,
    blocks: int,
    tokens: int,
    logged: str,
) -> None:
    model = model_from_config(tmp_path, "llama-3.1-8b", {"num_hidden_layers": 7})
    assert model.params == 7 * 218_112_000 + 2 * 525_336_576 + 4_096
    weights = weight_bytes(model, "bf16")
    plan = plan_gpu(
        model, weights, 24 * GIB, 4096, 2, 1, 3, 2048, 128, 0.5, enforce_eager=True, layer_partition=partition
    )
    assert plan.weights_bytes == weights_bytes
    assert plan.capacity.num_blocks == blocks
    assert (plan.capacity.tokens, plan.capacity.logged_concurrency) == (tokens, logged)


# A hybrid 4 full + 6 sliding layers (F F F F S S S S S S): 6 < 1.5 × 4 fails, so groups of 4: the full
# group [0-3] and the sliding layers split in two, [4, 6, 8] and [5, 7, 9] (layers i::2). P 2 → 5 + 5:
#   stage 0 (layers 0-4): full 4, sliding 1 and 0 → 4 layers a block
#   stage 1 (layers 5-9): full 0, sliding 2 and 3 → 3 layers a block
# Per request at 512 tokens, block 16, window 64, 2,048 in flight: 32 + 33 + 33 = 98 blocks on both.
# Page 16 × 2 × 2 heads × 16 × 2 B = 2,048 B; 8,192,000 B: stage 0 1,000 blocks, stage 1 1,333.
HYBRID = AttentionLayout((F,) * 4 + (S,) * 6, 2, 16, 16, sliding_window=64)


@pytest.mark.parametrize(
    ("stage_layers", "layers_per_group", "blocks"),
    [
        (None, [4, 3, 3], 8_192_000 // (4 * 2048)),  # one stage holds them all
        (range(0, 5), [4, 1, 0], 1_000),
        (range(5, 10), [0, 2, 3], 1_333),
    ],
)
def test_hybrid_groups_are_the_whole_models_and_each_stage_keeps_its_layers(
    stage_layers: range | None, layers_per_group: list[int], blocks: int
) -> None:
    size, groups = kv_groups(HYBRID, 512, 16, 2048, stage_layers)
    assert [(g.kind, g.layers, g.blocks_per_request) for g in groups] == [
        (F, layers_per_group[0], 32),
        (S, layers_per_group[1], 33),
        (S, layers_per_group[2], 33),
    ]
    assert size == max(layers_per_group)
    capacity = kv_capacity_for(HYBRID, 8_192_000, 512, 16, 2, 2048, stage_layers=stage_layers)
    assert (capacity.num_blocks, capacity.blocks_per_request) == (blocks, 98)


# The vocabulary matrices by hand. GGUF Q4_K_M as llama.cpp writes it: token_embd Q4_K (144 B per 256
# weights: 4,096 wide = 2,304 B a row), output Q6_K (210 B per 256: 3,360 B a row; 2,048 wide: 1,680 B);
# a tied model's token_embd stands in for output and is Q6_K. vLLM pads the rows to a multiple of 64
# (the GGUF plugin's embedding loader in the file's type too): 128,256 rows stay, 32,001 become 32,064.
Q4_K_M = (4.5, 6.5625)
VOCAB_CASES = [
    # Llama-3.1-8B Q4_K_M: 128,256 x 2,304 and 128,256 x 3,360; bf16 would be 1,050,673,152 B each.
    ((128_256, 4096, False, Q4_K_M), (295_501_824, 430_940_160, 295_501_824, 430_940_160), 726_441_984),
    # 32,001 tokens: stored 32,001 rows, allocated 32,064.
    ((32_001, 4096, False, Q4_K_M), (73_730_304, 107_523_360, 73_875_456, 107_735_040), 181_253_664),
    # Llama-3.2-1B Q4_K_M (tied, 2,048 wide): one Q6_K matrix, 128,256 x 1,680.
    ((128_256, 2048, True, Q4_K_M), (215_470_080, 215_470_080, 215_470_080, 215_470_080), 215_470_080),
    # bf16, 32,001 x 4,096 x 2 B = 262,152,192 stored, 32,064 rows 262,668,288 allocated.
    ((32_001, 4096, False, None), (262_152_192, 262_152_192, 262_668_288, 262_668_288), 524_304_384),
]


@pytest.mark.parametrize(("shape", "matrices", "stored"), VOCAB_CASES)
def test_vocab_matrix_bytes_follow_the_stored_type(
    shape: tuple[int, int, bool, tuple[float, float] | None], matrices: tuple[int, int, int, int], stored: int
) -> None:
    vocab, hidden, tied, bits = shape
    found = vocab_matrices(vocab, hidden, tied, 2, bits)
    assert (found.embedding, found.lm_head, found.padded_embedding, found.padded_lm_head) == matrices
    assert found.stored == stored


@pytest.mark.parametrize(
    ("vocab", "hidden", "tied", "bits", "stages", "held"),
    [
        # Llama-3.1-8B Q4_K_M over 2 stages: the first holds the Q4_K embedding, the last the Q6_K lm_head.
        (128_256, 4096, False, Q4_K_M, 2, [295_501_824, 430_940_160]),
        (128_256, 4096, False, Q4_K_M, 1, [726_441_984]),
        (128_256, 4096, False, Q4_K_M, 3, [295_501_824, 0, 430_940_160]),
        # Tied: the last stage builds its own embed_tokens and ties the lm_head to it.
        (128_256, 2048, True, Q4_K_M, 2, [215_470_080, 215_470_080]),
        (128_256, 2048, True, Q4_K_M, 1, [215_470_080]),
        # bf16 with padding: 32,064 rows x 8,192 B each.
        (32_001, 4096, False, None, 2, [262_668_288, 262_668_288]),
    ],
)
def test_each_stage_holds_its_own_vocab_matrices(
    vocab: int, hidden: int, tied: bool, bits: tuple[float, float] | None, stages: int, held: list[int]
) -> None:
    matrices = vocab_matrices(vocab, hidden, tied, 2, bits)
    built = pipeline_stages(32, stages, tied)
    assert [matrices.held_by(stage) for stage in built] == held


def test_gguf_stages_hold_the_vocab_matrices_in_the_files_types(tmp_path: Path) -> None:
    # Llama-3.1-8B as GGUF Q4_K_M: 6,979,321,856 Linear weights at 4.85 bits = 4,231,213,876 B (rounded
    # up); token_embd Q4_K 295,501,824 B and output Q6_K 430,940,160 B (VOCAB_CASES); 65 norms of 4,096
    # bf16 = 532,480 B; 4,958,188,340 B in all. P 2, 16 equal layers each: the decoder's 4,958,188,340 -
    # 726,441,984 - 8,192 (final norm) = 4,231,738,164 B split in halves of 2,115,869,082; the first
    # stage adds the Q4_K embedding, the last the Q6_K lm_head and the norm. At bf16 vocab matrices the
    # split had said 2,546,309,242 and 2,546,317,434 (decoder halves of 1,495,636,090).
    model = model_from_config(tmp_path, "llama-3.1-8b")
    weights = weight_bytes(model, "gguf")
    assert weights.total == 4_958_188_340
    built = pipeline_stages(model.num_layers, 2, model.tie_word_embeddings)
    first, last = (stage_weights_bytes(model, weights, stage) for stage in built)
    assert first == 2_115_869_082 + 295_501_824 == 2_411_370_906
    assert last == 2_115_869_082 + 430_940_160 + 8_192 == 2_546_817_434
    (whole,) = pipeline_stages(model.num_layers, 1, model.tie_word_embeddings)
    assert stage_weights_bytes(model, weights, whole) == weights.total
