"""The KV cache block size vLLM 0.32 picks on an NVIDIA GPU: the preferred block of the attention backend it selects."""

from __future__ import annotations

from engine.model.architecture import AttentionLayout

# The planner's GPU when none is named: Hopper (H100/H200).
DEFAULT_COMPUTE_CAPABILITY = (9, 0)
# vllm/config/cache.py::CacheConfig.DEFAULT_BLOCK_SIZE, which FLASH_ATTN, FLASHINFER, TRITON_ATTN,
# FLASH_ATTN_MLA and TRITON_MLA keep (their kernel sizes are MultipleOf(16) or include 16).
DEFAULT_BLOCK_SIZE = 16
# FlashAttention 4's SM90 FP8-KV-dequant kernel: 64-token pages (flash_attn.py::
# FlashAttentionBackend._get_sm90_fa4_fp8_kv_block_size).
SM90_FA4_FP8_HEAD_SIZE = 512
SM90_FA4_FP8_BLOCK_SIZE = 64
FLASHMLA_BLOCK_SIZE = 64  # mla/flashmla.py::FlashMLABackend.get_supported_kernel_block_sizes: [64]
FLASHINFER_MLA_BLOCK_SIZE = 32  # mla/flashinfer_mla.py: [32, 64], the smallest taken
CUTLASS_MLA_BLOCK_SIZE = 128  # mla/cutlass_mla.py: [128]
# mla/indexer.py::DeepseekV32IndexerBackend: [64] on CUDA; the latent's sparse backend (MultipleOf 32
# or 64) shares the block, so their least common multiple is 64.
SPARSE_MLA_BLOCK_SIZE = 64
TRITON_FLASHINFER_BLOCK_SIZE = 64  # triton_flashinfer.py: kernel_block_sizes=(64,)
# MLACommonBackend.get_supported_head_sizes (model_executor/layers/attention/mla_attention.py).
MLA_HEAD_SIZES = frozenset({320, 512, 576})
# FlashInferMLABackend.supports_combination: "qk_nope_head_dim in [64, 128, 192]".
FLASHINFER_MLA_QK_NOPE_HEAD_DIMS = frozenset({64, 128, 192})
# TritonFlashInferBackend's head_sizes=(256, 512): the SM100 mm-prefix composite.
MM_PREFIX_COMPOSITE_HEAD_SIZES = frozenset({256, 512})
FP8_E4M3_KV_DTYPES = frozenset({"fp8", "fp8_e4m3"})
# transformers_utils/model_arch_config_convertor.py::is_mm_prefix_lm's MM_PREFIX_LM_MODELS (bagel,
# gemma3, molmo2, moondream3, paligemma), named by the architectures vLLM's registry.py gives them.
MM_PREFIX_LM_ARCHITECTURES = frozenset(
    {
        "BagelForConditionalGeneration",
        "Gemma3ForConditionalGeneration",
        "Molmo2ForConditionalGeneration",
        "Moondream3ForCausalLM",
        "HfMoondream",
        "PaliGemmaForConditionalGeneration",
    }
)


def is_mm_prefix_lm(architecture: str, is_multimodal: bool) -> bool:
    """Whether vLLM gives this model bidirectional attention over image tokens (``ModelConfig.is_mm_prefix_lm``)."""
    return is_multimodal and architecture in MM_PREFIX_LM_ARCHITECTURES


def is_quantized_kv_cache(kv_cache_dtype: str) -> bool:
    """vllm/utils/torch_utils.py::``is_quantized_kv_cache``: fp8*, *per_token_head, nvfp4*."""
    return kv_cache_dtype.startswith(("fp8", "nvfp4")) or kv_cache_dtype.endswith("per_token_head")


def _mla_block_size(
    attention: AttentionLayout, major: int, kv_cache_dtype: str, qk_nope_head_dim: int | None
) -> int:
    """The block of the dense MLA backend vLLM selects (platforms/cuda.py::``_get_backend_priorities``).

    SM90: FLASH_ATTN_MLA (FA3; no quantized KV, MultipleOf(16)) before FLASHMLA (64). SM100:
    FLASHINFER_MLA (32) where its qk_nope_head_dim fits, else CUTLASS_MLA (128; TOKENSPEED_MLA in
    between needs its own package and takes only R1 dims, which FLASHINFER_MLA takes first). Other
    GPUs (Ampere, Ada, SM12x): TRITON_MLA (MultipleOf(16)), as is any latent size outside
    ``MLA_HEAD_SIZES``.
    """
    if attention.head_size not in MLA_HEAD_SIZES:
        return DEFAULT_BLOCK_SIZE
    if major == 9:
        return FLASHMLA_BLOCK_SIZE if is_quantized_kv_cache(kv_cache_dtype) else DEFAULT_BLOCK_SIZE
    if major == 10:
        if qk_nope_head_dim is None or qk_nope_head_dim in FLASHINFER_MLA_QK_NOPE_HEAD_DIMS:
            return FLASHINFER_MLA_BLOCK_SIZE
        return CUTLASS_MLA_BLOCK_SIZE
    return DEFAULT_BLOCK_SIZE


def gpu_block_size(
    attention: AttentionLayout,
    compute_capability: tuple[int, int] = DEFAULT_COMPUTE_CAPABILITY,
    kv_cache_dtype: str = "auto",
    mm_prefix: bool = False,
    qk_nope_head_dim: int | None = None,
) -> int:
    """The block size vLLM 0.32 sets when no ``--block-size`` is given, before hybrid alignment.

    vllm/platforms/interface.py::``Platform.update_block_size_for_backend``: the selected backend's
    ``get_preferred_block_size(16)`` (one backend), or the smallest size every backend takes
    (``_preferred_block_size_for_backends``: DSA's latent and indexer backends). Backends in
    platforms/cuda.py::``_get_backend_priorities`` order, the first valid one:

    - DeepSeek Sparse Attention (an indexer): 64 on every GPU.
    - MLA: see ``_mla_block_size`` (H100 bf16 16, fp8 64; B200 32).
    - SM10x: FLASHINFER (16), or with an mm-prefix model of head size 256/512 TRITON_FLASHINFER (64).
      FlashAttention 4's 128-token head-256 pages (``_get_fa4_hd256_block_size``) come only with
      FLASH_ATTN, which FLASHINFER (head sizes 64/128/256/512) precedes.
    - SM90: FLASH_ATTN 16; 64 with an fp8 KV cache at head size 512 (FA3 takes up to 256, so FA4
      serves it, with its FP8-KV 64-token pages), Gemma 4's 512-wide full layers included (its
      sliding layers stay on FA3, models/config.py::Gemma4Config's per-layer FA3/FA4 for fp8).
      mm-prefix models of head size 256/512: TRITON_FLASH_ATTN, whose kernel sizes are FLASH_ATTN's
      (composite.py::_intersect_kernel_block_sizes with Triton's MultipleOf(16)): the same blocks.
    - Others (Ampere, Ada, SM11x/12x: FA2; Volta/Turing: TRITON_ATTN): 16.

    Args:
        attention: the model's attention layout.
        compute_capability: the GPU's CUDA compute capability.
        kv_cache_dtype: vLLM's ``--kv-cache-dtype`` ("auto", "fp8", ...).
        mm_prefix: the model attends bidirectionally over images (``is_mm_prefix_lm``; Gemma 4's
            ``attention.vision_bidirectional`` counts too).
        qk_nope_head_dim: MLA's non-rope query/key head size (None: one FLASHINFER_MLA takes).
    """
    major = compute_capability[0]
    mm_prefix = mm_prefix or attention.vision_bidirectional  # Gemma 4 by its config, not by name
    if attention.indexer_layers:
        return SPARSE_MLA_BLOCK_SIZE
    if attention.mla:
        return _mla_block_size(attention, major, kv_cache_dtype, qk_nope_head_dim)
    if major == 10 and mm_prefix and attention.head_size in MM_PREFIX_COMPOSITE_HEAD_SIZES:
        return TRITON_FLASHINFER_BLOCK_SIZE
    # FlashAttentionBackend.get_preferred_block_size asks model_config.get_head_size(), the largest
    # layer's (ModelArchitectureConfig.from_layers: "collapsed with `max`"): Gemma 4's full layers.
    largest_head = max(attention.head_size, attention.full_head_size)
    if major == 9 and kv_cache_dtype in FP8_E4M3_KV_DTYPES and largest_head == SM90_FA4_FP8_HEAD_SIZE:
        return SM90_FA4_FP8_BLOCK_SIZE
    return DEFAULT_BLOCK_SIZE
