"""Gemma 4's GPU block size: sliding layers of head size 256 beside full layers of 512, per GPU and KV dtype.

Worked by hand from the installed vLLM 0.32 (.venv/lib/python3.11/site-packages/vllm/):

- model_executor/models/config.py::Gemma4Config.verify_and_update_config sees head dims
  {sliding 256, full 512} (transformers' Gemma4TextConfig writes ``per_layer_config`` for the full
  layers). vllm_flash_attn/flash_attn_interface.py::_is_fa4_supported: FA4 only on 9.x/10.x/11.x.
  A100 (8.0): no FA4, so ``attention_config.backend = TRITON_ATTN`` for every layer. H100 (9.0)
  with an fp8 KV cache: "per-layer FA3/FA4 selection" (flash_attn_version left None); otherwise
  (H100 auto, B200) ``flash_attn_version = 4``, backend left to the priorities.
- platforms/cuda.py::_get_backend_priorities: SM90 FLASH_ATTN first (FlashAttentionBackend.
  supports_head_size: 512 only with FA4, which 9.0 has); SM100 causal FLASHINFER first
  (get_supported_head_sizes [64, 128, 256, 512]: both layer kinds).
- platforms/interface.py::update_block_size_for_backend: one backend class for all layers, so its
  get_preferred_block_size(16). TritonAttentionBackend: supports_block_size(16) -> 16. FLASHINFER:
  get_supported_kernel_block_sizes starts [16, ...] -> 16. FLASH_ATTN: _get_sm90_fa4_fp8_kv_block_size
  reads model_config.get_head_size(), which config/model_arch.py::ModelArchitectureConfig.from_layers
  collapses "with `max`" over the layers: 512; with an fp8 (e4m3) cache on SM90
  fa_utils.get_flash_attn_version(head_size=512) upgrades FA3 to 4 ("FA3 does not support
  head_size=512"), so "return 64". Without fp8, or off SM90 (_get_fa4_hd256_block_size needs major
  10/11 and FLASH_ATTN), 16. fp8_e5m2 on H100: FLASH_ATTN's supported_kv_cache_dtypes lack it,
  FLASHINFER takes it: 16.
- v1/core/kv_cache_utils.py::unify_kv_cache_spec_page_size: the smaller page's block is multiplied
  by (largest page / its page) (engine/plan/kv_page_size.py::kind_block_size).

- Published Gemma 4 configs say ``use_bidirectional_attention: "vision"``: transformers_utils/
  model_arch_config_convertor.py::Gemma4ModelArchConfigConvertor.is_mm_prefix_lm makes them mm-prefix
  models (ModelConfig._supports_multimodal_for_mm_prefix: True unless multimodal inputs are turned
  off). A100: still TRITON_ATTN, 16. H100: TRITON_FLASH_ATTN first (a Triton + FLASH_ATTN composite,
  head_sizes (256, 512); the causal FA half gets use_mm_prefix False, so fp8 passes): kernel sizes
  composite.py::_intersect_kernel_block_sizes of Triton's MultipleOf(16) and FLASH_ATTN's
  (MultipleOf(16); [64] with fp8 at model head size 512): 16, fp8 64 (16 % 64 fails
  supports_block_size, so the smallest listed). B200: TRITON_FLASHINFER, "kernel_block_sizes=(64,)":
  64 with either dtype.

Config: tests/plan/test_kv_cache_gemma4.py's made-up Gemma 4 (sliding 1 KV head × 256, full 1 × 512).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import read_architecture
from engine.plan.gpu_block_size import gpu_block_size
from engine.plan.kv_page_size import kind_block_size
from tests.plan.test_kv_cache_gemma4 import GEMMA4

A100, H100, B200 = (8, 0), (9, 0), (10, 0)
# Pages per token (any dtype, elements): sliding 1 × 2 × 256 = 512, full 1 × 2 × 512 = 1024: ratio 2.
MQA: dict[str, Any] = {}
# k_eq_v: sliding 4 KV heads × 2 × 256 = 2048, full num_global_key_value_heads 1 × 2 × 512 = 1024:
# the full page is the smaller one, its block doubles.
K_EQ_V = {"num_key_value_heads": 4, "attention_k_eq_v": True, "num_global_key_value_heads": 1}
VISION = {"use_bidirectional_attention": "vision"}


@pytest.mark.parametrize(
    ("overrides", "capability", "kv_dtype", "block", "sliding_block", "full_block"),
    [
        # A100: TRITON_ATTN forced, 16; sliding 16 × 2.
        (MQA, A100, "auto", 16, 32, 16),
        (MQA, A100, "fp8", 16, 32, 16),
        # H100 bf16: FA4 on every layer, no fp8 page rule: 16.
        (MQA, H100, "auto", 16, 32, 16),
        # H100 fp8: FA3 sliding + FA4 full, FLASH_ATTN's preferred size for head 512 fp8: 64;
        # sliding 64 × 2 = 128 (its MultipleOf(16) kernel takes it, the full layers' [64] takes 64).
        (MQA, H100, "fp8", 64, 128, 64),
        (MQA, H100, "fp8_e4m3", 64, 128, 64),
        (MQA, H100, "fp8_e5m2", 16, 32, 16),
        (K_EQ_V, H100, "fp8", 64, 64, 128),
        (K_EQ_V, H100, "auto", 16, 16, 32),
        # B200: FLASHINFER for both head sizes, 16.
        (MQA, B200, "auto", 16, 32, 16),
        (MQA, B200, "fp8", 16, 32, 16),
        # Bidirectional image attention (mm prefix).
        (VISION, A100, "auto", 16, 32, 16),
        (VISION, H100, "auto", 16, 32, 16),
        (VISION, H100, "fp8", 64, 128, 64),
        (VISION, B200, "auto", 64, 128, 64),
        (VISION, B200, "fp8", 64, 128, 64),
    ],
)
def test_gemma4_block_size_per_gpu(
    overrides: dict[str, Any],
    capability: tuple[int, int],
    kv_dtype: str,
    block: int,
    sliding_block: int,
    full_block: int,
) -> None:
    attention = read_architecture({**GEMMA4, **overrides}, Path(".")).attention
    assert (attention.head_size, attention.full_head_size) == (256, 512)
    chosen = gpu_block_size(attention, capability, kv_dtype)
    assert (
        chosen,
        kind_block_size(attention, "sliding", chosen),
        kind_block_size(attention, "full", chosen),
    ) == (block, sliding_block, full_block)


def test_the_multimodal_configs_text_part_carries_the_flag() -> None:
    """Gemma4ForConditionalGeneration's config.json: the flag sits in text_config, as published."""
    text = {key: value for key, value in GEMMA4.items() if key != "architectures"}
    config = {"architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4"}
    vision = read_architecture({**config, "text_config": text | VISION}, Path(".")).attention
    plain = read_architecture({**config, "text_config": text}, Path(".")).attention
    # vLLM 0.32 acts only on == "vision" (is_mm_prefix_lm, gemma4_mm.py's full-attention set): "all" is causal.
    every_token = read_architecture(
        {**config, "text_config": text | {"use_bidirectional_attention": "all"}}, Path(".")
    ).attention
    # B200: TRITON_FLASHINFER's 64 with the flag (rows above), FLASHINFER's 16 without.
    assert (vision.vision_bidirectional, gpu_block_size(vision, B200)) == (True, 64)
    assert (plain.vision_bidirectional, gpu_block_size(plain, B200)) == (False, 16)
    assert (every_token.vision_bidirectional, gpu_block_size(every_token, B200)) == (False, 16)
