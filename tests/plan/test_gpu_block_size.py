"""The GPU block size vLLM 0.32 picks, per compute capability, attention layout and KV cache dtype.

Each row's figure is read from the installed vLLM (.venv/lib/python3.11/site-packages/vllm/):
platforms/cuda.py::``_get_backend_priorities`` orders the backends, the first one whose
``validate_configuration`` passes serves, and platforms/interface.py::``update_block_size_for_backend``
sets the block to its ``get_preferred_block_size(16)`` (v1/attention/backend.py: 16 where the
backend takes 16, else the smallest size it lists). Layouts come from tests/fixtures/configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import AttentionLayout, read_architecture
from engine.plan.gpu_block_size import gpu_block_size, is_mm_prefix_lm
from engine.plan.memory import plan_gpu, weight_bytes
from tests.plan.model_configs import CONFIGS, model_from_config, published_config

H100, B200, A100, L40S, RTX5090, V100 = (9, 0), (10, 0), (8, 0), (8, 9), (12, 0), (7, 0)


def layout(name: str, text_changes: dict[str, Any] | None = None) -> AttentionLayout:
    """The attention layout quant-tui reads from ``name``'s published config (with ``text_changes``)."""
    config = published_config(name)
    (config.get("text_config") or config).update(text_changes or {})
    return read_architecture(config, CONFIGS).attention


LLAMA = layout("llama-3.1-8b")  # GQA 8 KV heads × 128
GEMMA_256 = layout("gemma-3-27b-it", {"head_dim": 256})  # Gemma 3 4B/12B's head size, sliding layers
GEMMA_128 = layout("gemma-3-27b-it")  # Gemma 3 27B: head 128
HEAD_512 = layout("llama-3.1-8b", {"head_dim": 512})
DEEPSEEK = layout("deepseek-v3")  # MLA latent 576, qk_nope_head_dim 128
DEEPSEEK_SPARSE = layout("deepseek-v3.2")  # MLA + indexer (DSA)


@pytest.mark.parametrize(
    ("attention", "capability", "kv_dtype", "mm_prefix", "qk_nope", "expected"),
    [
        # SM90: FLASH_ATTN first; flash_attn.py::get_supported_kernel_block_sizes "return [MultipleOf(16)]".
        (LLAMA, H100, "auto", False, None, 16),
        # FA3 serves fp8 on SM90; the 64-token rule needs "head_size == 512 and get_flash_attn_version(...) == 4".
        (LLAMA, H100, "fp8", False, None, 16),
        # Head 512 on SM90: "FA3 does not support head_size=512 on SM90: upgrading FlashAttention 3 -> 4";
        # with fp8: "The SM90 FP8-KV-dequant kernel uses a 64-token TMA tile/page. return 64".
        (HEAD_512, H100, "fp8", False, None, 64),
        (HEAD_512, H100, "auto", False, None, 16),
        # FLASH_ATTN's supported_kv_cache_dtypes has no "fp8_e5m2": FLASHINFER, "return [16, 32, 64]".
        (HEAD_512, H100, "fp8_e5m2", False, None, 16),
        # SM100, causal: "AttentionBackendEnum.FLASHINFER, AttentionBackendEnum.FLASH_ATTN, ..." -> 16.
        (LLAMA, B200, "auto", False, None, 16),
        (LLAMA, B200, "fp8", False, None, 16),
        # FLASHINFER's get_supported_head_sizes "[64, 128, 256, 512]" takes 256 before FLASH_ATTN's FA4
        # hd256 kernel ("FA4_HD256_PAGE_SIZE = 128") is reached.
        (GEMMA_256, B200, "auto", False, None, 16),
        # Gemma 3 (mm prefix) on SM100: "[AttentionBackendEnum.TRITON_FLASHINFER] if use_mm_prefix" with
        # "head_sizes=(256, 512), kernel_block_sizes=(64,)" -> 64; FLASHINFER has no supports_mm_prefix.
        (GEMMA_256, B200, "auto", True, None, 64),
        (GEMMA_256, B200, "fp8", True, None, 64),
        # Head 128 is outside TRITON_FLASHINFER's head sizes: FLASH_ATTN (FA4 on SM100, mm prefix) -> 16.
        (GEMMA_128, B200, "auto", True, None, 16),
        # SM90 mm prefix: TRITON_FLASH_ATTN, Triton's and FA's MultipleOf(16) intersected -> 16.
        (GEMMA_256, H100, "auto", True, None, 16),
        # Ampere/Ada: FA2 (bf16) -> 16; fp8: "FP8 KV cache requires FA3 on SM90 ... or FA4 on SM100" ->
        # FLASHINFER -> 16.
        (LLAMA, A100, "auto", False, None, 16),
        (LLAMA, L40S, "fp8", False, None, 16),
        (GEMMA_256, L40S, "auto", False, None, 16),
        # SM12x: the non-SM100 list, FLASH_ATTN with FA2 ("else: fa_version = 2") -> 16.
        (LLAMA, RTX5090, "auto", False, None, 16),
        # Volta: FLASH_ATTN "capability >= DeviceCapability(8, 0)", FLASHINFER too: TRITON_ATTN MultipleOf(16).
        (LLAMA, V100, "auto", False, None, 16),
        # MLA on SM90: "FLASH_ATTN_MLA, FLASHMLA, ..."; FLASH_ATTN_MLA takes kv "auto"/fp16/bf16 with
        # "return [MultipleOf(16)]" -> 16; fp8 goes on to FLASHMLA "return [64]".
        (DEEPSEEK, H100, "auto", False, None, 16),
        (DEEPSEEK, H100, "fp8", False, None, 64),
        (DEEPSEEK, H100, "fp8_e4m3", False, None, 64),
        # MLA on SM100: FLASHINFER_MLA first, "return [32, 64]": 16 not taken, the smallest is 32.
        (DEEPSEEK, B200, "auto", False, 128, 32),
        (DEEPSEEK, B200, "fp8", False, None, 32),
        # "FlashInfer MLA kernel requires qk_nope_head_dim in [64, 128, 192]"; TOKENSPEED_MLA wants
        # qk_nope 128 (and its package): CUTLASS_MLA "return [128]".
        (DEEPSEEK, B200, "auto", False, 96, 128),
        # MLA elsewhere: Ampere's list ends in TRITON_MLA (FLASH_ATTN_MLA SM90, FLASHMLA SM90/100,
        # FLASHINFER_MLA SM100 only); SM12x "return [TRITON_MLA, ...]": MultipleOf(16) -> 16.
        (DEEPSEEK, A100, "auto", False, None, 16),
        (DEEPSEEK, RTX5090, "fp8", False, None, 16),
        # DSA: the latent's sparse backend (FLASHMLA_SPARSE MultipleOf(64), FLASHINFER_MLA_SPARSE
        # MultipleOf(32)) and DeepseekV32IndexerBackend "[64]" share one size: lcm -> 64.
        (DEEPSEEK_SPARSE, H100, "auto", False, None, 64),
        (DEEPSEEK_SPARSE, H100, "fp8", False, None, 64),
        (DEEPSEEK_SPARSE, B200, "fp8", False, None, 64),
        (DEEPSEEK_SPARSE, B200, "auto", False, None, 64),
    ],
)
def test_gpu_block_size_follows_vllms_backend(
    attention: AttentionLayout,
    capability: tuple[int, int],
    kv_dtype: str,
    mm_prefix: bool,
    qk_nope: int | None,
    expected: int,
) -> None:
    assert gpu_block_size(attention, capability, kv_dtype, mm_prefix, qk_nope) == expected


def test_the_layouts_are_the_ones_the_rows_name() -> None:
    assert (LLAMA.head_size, LLAMA.mla, GEMMA_256.head_size, GEMMA_128.head_size) == (128, False, 256, 128)
    assert (HEAD_512.head_size, DEEPSEEK.mla, DEEPSEEK.head_size) == (512, True, 576)
    assert DEEPSEEK_SPARSE.indexer_layers and not DEEPSEEK.indexer_layers


@pytest.mark.parametrize(
    ("architecture", "multimodal", "expected"),
    [
        # model_arch_config_convertor.py::is_mm_prefix_lm: MM_PREFIX_LM_MODELS has "gemma3" (the
        # multimodal Gemma3ForConditionalGeneration; text-only Gemma3ForCausalLM is "gemma3_text").
        ("Gemma3ForConditionalGeneration", True, True),
        ("PaliGemmaForConditionalGeneration", True, True),
        ("Gemma3ForCausalLM", False, False),
        ("LlavaForConditionalGeneration", True, False),
        # "if not supports_multimodal: return False".
        ("Gemma3ForConditionalGeneration", False, False),
    ],
)
def test_mm_prefix_models_are_vllms(architecture: str, multimodal: bool, expected: bool) -> None:
    assert is_mm_prefix_lm(architecture, multimodal) is expected


# DeepSeek-V3 FP8 on one H200/B200 slot of 8 (TP 8), 32k context: the planned pool's block is the
# backend's, and a request takes cdiv(32,768, block) blocks: 2,048 of 16, 512 of 64, 1,024 of 32.
@pytest.mark.parametrize(
    ("capability", "kv_dtype", "block", "blocks_per_request"),
    [
        (H100, "auto", 16, 2048),
        (H100, "fp8", 64, 512),
        (B200, "auto", 32, 1024),
    ],
)
def test_plan_gpu_plans_the_backends_block(
    tmp_path: Path, capability: tuple[int, int], kv_dtype: str, block: int, blocks_per_request: int
) -> None:
    model = model_from_config(tmp_path, "deepseek-v3")
    kv_bytes = 1 if kv_dtype == "fp8" else 2
    plan = plan_gpu(
        model,
        weight_bytes(model, "fp8"),
        143_771 * 1024**2,
        32768,
        kv_bytes,
        8,
        1,
        16384,
        1024,
        compute_capability=capability,
        kv_cache_dtype=kv_dtype,
    )
    assert (plan.capacity.block_size, plan.capacity.blocks_per_request) == (block, blocks_per_request)
    assert plan.capacity.bytes_per_block == 61 * 576 * kv_bytes * block  # one latent page per layer


def test_mm_prefix_reaches_the_plan(tmp_path: Path) -> None:
    """Gemma 3 (multimodal, head 256) on a B200: TRITON_FLASHINFER's 64-token block in the plan."""
    model = model_from_config(tmp_path, "gemma-3-27b-it", text_changes={"head_dim": 256})
    assert model.is_multimodal
    plan = plan_gpu(
        model, weight_bytes(model, "bf16"), 192 * 1024**3, 8192, 2, 1, 1, 8192, 256, compute_capability=B200
    )
    assert plan.capacity.block_size == 64
