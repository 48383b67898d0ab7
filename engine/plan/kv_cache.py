"""vLLM's KV cache sizing: per-layer pages, the hybrid manager's groups, blocks, capacity and concurrency.

Follows vLLM 0.32: ``v1/kv_cache_interface.py`` (page sizes, ``max_memory_usage_bytes`` of full,
sliding-window and chunked-local specs), ``v1/core/kv_cache_utils.py`` (``get_kv_cache_groups``,
``_get_kv_cache_groups_uniform_page_size``, ``_project_kv_cache_groups_to_worker``,
``get_kv_cache_config_from_groups``: ``available_memory // bytes_per_block`` blocks, the bytes of a block
from ``_get_kv_cache_bytes_per_block``; ``_check_enough_kv_cache_memory``,
``get_max_concurrency_for_kv_cache_config``, ``get_kv_cache_capacity``) and the CPU platform's block size.
Hybrid linear-attention and Mamba models (Qwen3-Next, Qwen3.5, Granite-4.0-H, Nemotron-H, Jamba) add
``MambaSpec`` layers: one state page per request, the attention block raised until its page holds a
state page, the state padded to it; layers without a mixer (Nemotron-H's MLP/MoE ones) cache nothing.
DeepSeek Sparse Attention models (DeepSeek-V3.2, GLM-5) add an indexer key cache to each layer with an
indexer (``indexer_page_bytes``). Gemma 4's full layers have larger pages than its sliding ones
(``unify_kv_cache_spec_page_size``: the smaller page's block size is raised to match, ``kind_block_size``);
Gemma 3n / 4's KV-sharing layers have no spec (``GPUModelRunner.get_kv_cache_spec``), so no page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from engine.model.architecture import AttentionLayout, LayerAttention
from engine.model.param_count import ceil_div
from engine.model.recurrent_state import RecurrentState
from engine.plan.gpu_block_size import DEFAULT_COMPUTE_CAPABILITY, gpu_block_size
from engine.plan.kv_page_size import kind_block_size, largest_page_bytes_per_token

# vLLM's CPU block sizes (GPUs: engine/plan/gpu_block_size.py).
CPU_BLOCK_SIZE = 128  # CPU_ATTN, and AMX_MLA on AMX hosts
CPU_MLA_BLOCK_SIZE_WITHOUT_AMX = 16  # CPU_MLA, forced on hosts without AMX
FLOAT32_BYTES = 4
# FlashMLA sparse's fp8_ds_mla latent, bytes per token: 512 fp8 NoPE + 4 float32 scales + 64 bf16 RoPE
# (vllm/model_executor/layers/attention/mla_attention.py::MLAAttention.get_kv_cache_spec).
FP8_DS_MLA_BYTES = 656
FP8_KV_DTYPES = frozenset({"fp8", "fp8_e4m3"})


@dataclass(frozen=True, slots=True)
class KvGroup:
    """One KV cache group of vLLM's hybrid manager.

    Attributes:
        kind: the attention kind of its layers.
        layers: real layers in the group (the rest of ``group_size`` is padding); on one pipeline
            stage, those of its layers that stage holds.
        blocks_per_request: blocks one request at max_model_len holds in each of its layers.
    """

    kind: LayerAttention
    layers: int
    blocks_per_request: int


@dataclass(frozen=True, slots=True)
class KvCapacity:
    """The KV cache vLLM allocates, in its own units, and the numbers its start-up log line shows.

    Attributes:
        num_blocks: blocks in the shared pool (``available // bytes_per_block``).
        block_size: tokens per block.
        tokens: the logged "KV cache size: N tokens" (``int(max_concurrency × max_model_len)``).
        max_concurrency: requests of max_model_len tokens that fit (``num_blocks / blocks_per_request``).
        blocks_per_request: blocks one max-length request needs, summed over the groups.
        bytes_per_block: one block id's bytes over the largest group's layers.
        max_model_len: the request length the concurrency is stated for.
        groups: the KV cache groups (one for a model with a single attention kind).
    """

    num_blocks: int
    block_size: int
    tokens: int
    max_concurrency: float
    blocks_per_request: int = 0
    bytes_per_block: int = 0
    max_model_len: int = 0
    groups: tuple[KvGroup, ...] = ()

    @property
    def fits_one_sequence(self) -> bool:
        """Whether vLLM starts: one max-length request plus the null block must fit in the pool."""
        return self.blocks_per_request > 0 and self.num_blocks >= self.blocks_per_request + 1

    @property
    def logged_concurrency(self) -> str:
        """The concurrency exactly as vLLM prints it (``%.2f``)."""
        return f"{self.max_concurrency:.2f}"

    def log_line(self, device: str = "CPU") -> str:
        """vLLM's start-up line, e.g. "CPU KV cache size: 4,194,304 tokens, Maximum concurrency for 512 ...x"."""
        return (
            f"{device} KV cache size: {self.tokens:,} tokens, Maximum concurrency for "
            f"{self.max_model_len:,} tokens per request: {self.logged_concurrency}x"
        )


def block_size_for(
    attention: AttentionLayout,
    cpu: bool,
    cpu_has_amx: bool = True,
    compute_capability: tuple[int, int] | None = None,
    kv_cache_dtype: str = "auto",
    mm_prefix: bool = False,
) -> int:
    """The block size vLLM picks: CPU 128 (MLA without AMX 16); a GPU's from its attention backend.

    GPU: ``gpu_block_size.gpu_block_size`` for this compute capability (None: Hopper), KV cache dtype
    and mm-prefix attention (``gpu_block_size.is_mm_prefix_lm``).
    """
    if cpu:
        return CPU_MLA_BLOCK_SIZE_WITHOUT_AMX if attention.mla and not cpu_has_amx else CPU_BLOCK_SIZE
    capability = compute_capability or DEFAULT_COMPUTE_CAPABILITY
    return gpu_block_size(attention, capability, kv_cache_dtype, mm_prefix)


def _visible_host_flags(cpuinfo: Path) -> frozenset[str]:
    """The CPU flags vLLM's processes see (none from an emulated AVX2 host's above-AVX2 sets); empty if unreadable."""
    from engine.hardware.cpu_isa import visible_cpu_flags

    try:
        flags = frozenset(cpuinfo.read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return frozenset()
    return visible_cpu_flags(flags)


def host_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether vLLM sees AMX tiles on this CPU (its CPU MLA backend and block size depend on it).

    An emulated AVX2 host (``QUANT_TUI_CPU_ISA=avx2``) has none: vLLM's processes are told so too.
    """
    return "amx_tile" in _visible_host_flags(cpuinfo)


def host_has_avx512_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether vLLM's CPU platform sees AVX-512 BF16 (it then keeps an "auto" GDN/Mamba state in float32)."""
    return "avx512_bf16" in _visible_host_flags(cpuinfo)


def state_dtype_bytes(
    state: RecurrentState, model_dtype_bytes: int = 2, cpu_avx512_bf16: bool = False
) -> tuple[int, int]:
    """Bytes of one (conv, temporal) state element.

    ``MambaStateDtypeCalculator.gated_delta_net_state_dtype``: the conv state takes the model dtype
    (``mamba_cache_dtype`` "auto"; an FP8 KV cache does not change it), the temporal state
    ``mamba_ssm_cache_dtype``: the config's ``mamba_ssm_dtype`` where it sets one
    (``Qwen3_5ForConditionalGenerationConfig``), else "auto", the model dtype. vllm/platforms/cpu.py::
    ``CpuPlatform.check_and_update_config``: on a host with AVX-512 BF16 (or AMX) an "auto" state is
    reset to float32 for the accelerated GDN kernels; without it (AVX2, AVX-512 without BF16) it stays.
    """
    ssm = state.ssm_dtype_bytes
    if ssm is None:
        ssm = FLOAT32_BYTES if cpu_avx512_bf16 else model_dtype_bytes
    return model_dtype_bytes, ssm


def state_pages_per_request(state: RecurrentState | None, prefix_caching: bool = True) -> int:
    """State pages one request holds in one linear layer (``MambaSpec.max_memory_usage_bytes``).

    Prefix caching is on by default for hybrid models (``ModelConfig.is_prefix_caching_supported``),
    which puts ``mamba_cache_mode`` in "align" (``MambaModelConfig.verify_and_update_config``):
    2 pages (the running state and the last block-aligned one), plus Mamba2's prefill checkpoint page
    (``MambaMixer2.get_kv_cache_spec``: ``num_prefill_checkpoint_blocks=1``; Gated DeltaNet has none);
    without it 1.
    """
    if state is None:
        return 0
    return 2 + state.checkpoint_pages if prefix_caching else 1


def hybrid_block_size(
    attention: AttentionLayout,
    block_size: int,
    kv_dtype_bytes: float,
    state_bytes: tuple[int, int] = (2, 2),
    tensor_parallel_size: int = 1,
) -> int:
    """The attention block size vLLM raises to so one attention page holds a state page.

    vllm/platforms/interface.py::``Platform._align_hybrid_block_size``: ``kernel_alignment ×
    cdiv(state_page, kernel_alignment × attention_page_per_token)``, where the kernel alignment is
    the backend's configured block (CPU_ATTN: max(32, 128) = 128; FLASH_ATTN: 16); never lowered.
    """
    if attention.state is None or not (attention.count("linear") or attention.state.parallel):
        return block_size
    per_token = attention.bytes_per_token_per_layer(kv_dtype_bytes, tensor_parallel_size)
    state_page = attention.state.page_bytes(*state_bytes, tensor_parallel_size)
    if per_token <= 0:
        return block_size
    return max(block_size, block_size * ceil_div(state_page, block_size * per_token))


def blocks_per_request(
    kind: LayerAttention,
    max_model_len: int,
    block_size: int,
    max_in_flight_tokens: int,
    sliding_window: int | None = None,
    attention_chunk_size: int | None = None,
    state_pages: int = 2,
) -> int:
    """Blocks one request at max_model_len holds in one layer (the specs' ``max_memory_usage_bytes``).

    Sliding windows keep the last ``window − 1`` tokens plus those in flight, and one more block
    because the window may start mid-block; chunked-local layers keep the chunk plus those in flight;
    linear layers their ``state_pages`` (``state_pages_per_request``), whatever the length.
    """
    if kind == "linear":
        return state_pages
    if kind == "sliding" and sliding_window:
        tokens = min(sliding_window - 1 + max_in_flight_tokens, max_model_len)
        return math.ceil(tokens / block_size) + 1
    if kind == "chunked" and attention_chunk_size:
        return math.ceil(min(attention_chunk_size + max_in_flight_tokens, max_model_len) / block_size)
    return math.ceil(max_model_len / block_size)


def indexer_page_bytes(attention: AttentionLayout, block_size: int, stage_layers: range | None = None) -> int:
    """Bytes one block adds over the indexer caches of one rank (of ``stage_layers``' stage).

    Each ``DeepseekV32IndexerCache`` is an ``MLAAttentionSpec`` (one uint8 vector per token, whole on
    every rank) with the indexer's cache role, so its page differs from the latent's and the two do
    not merge (``MLAAttentionSpec.merge``); both are full attention, so ``get_kv_cache_groups`` puts
    every layer in one ``UniformTypeKVCacheSpecs`` group, whose block costs the sum of all pages
    (``_get_kv_cache_bytes_per_block``; the sparse backends' block-stride alignments, whole pages of
    64 tokens, add no padding at block size 64) and whose request needs ``cdiv(len, block)`` blocks.
    """
    return block_size * attention.indexer_bytes_per_token * attention.indexer_count(stage_layers)


def sparse_mla_kv_dtype(
    attention: AttentionLayout, model_type: str, kv_cache_dtype: str, compute_capability_major: int
) -> tuple[str, float | None]:
    """The latent's KV dtype vLLM 0.32 serves a DSA model with on this GPU, and its bytes per element.

    ``(kv_cache_dtype, None)`` for a model without an indexer (nothing changes). For DSA models:
    GLM-5 (``glm_moe_dsa``) turns "auto" into "fp8_e4m3" on SM10x (model_executor/models/config.py::
    ``GlmMoeDsaForCausalLM.verify_and_update_config``); an fp8 cache is then served by
    FLASHINFER_MLA_SPARSE on SM10x (plain fp8, 1 byte; platforms/cuda.py::``_get_backend_priorities``)
    but by FLASHMLA_SPARSE on SM90 (FLASH_ATTN_MLA_SPARSE takes no fp8), which stores it as
    ``fp8_ds_mla`` (``_canonicalize_sparse_mla_kv_cache_dtype``): 656 bytes per 576-element latent.
    ``None`` bytes: the dtype's own size (bf16 2).
    """
    if not attention.indexer_layers:
        return kv_cache_dtype, None
    if model_type == "glm_moe_dsa" and kv_cache_dtype == "auto" and compute_capability_major == 10:
        kv_cache_dtype = "fp8_e4m3"
    if kv_cache_dtype in FP8_KV_DTYPES:
        if compute_capability_major == 9:
            return "fp8_ds_mla", FP8_DS_MLA_BYTES / attention.head_size
        return kv_cache_dtype, 1.0
    return kv_cache_dtype, None


def kv_groups(
    attention: AttentionLayout,
    max_model_len: int,
    block_size: int,
    max_in_flight_tokens: int,
    stage_layers: range | None = None,
    prefix_caching: bool = True,
    tensor_parallel_size: int = 1,
) -> tuple[int, tuple[KvGroup, ...]]:
    """vLLM's layer groups: ``(layers in the largest group, groups)``.

    One kind only: one group of all layers. Several kinds with equal pages: each kind's layers are
    cut into groups of ``group_size`` (the smallest kind's count, or the largest when that is under
    1.5× the smallest), padding the last group of each kind; group ``i`` of a kind takes that kind's
    layers ``i::groups``. Under pipeline parallelism the groups are the whole model's and each stage
    keeps its own layers of every group (``_project_kv_cache_groups_to_worker``), so ``stage_layers``
    (one stage's decoder layers) counts only those; its largest group sets its bytes per block.
    Linear layers form their own kind: their state page is padded to the attention page, so the page
    is uniform (``_get_kv_cache_groups_uniform_page_size``). Layers of kind "none" (Nemotron-H's MLP
    and MoE layers) have no Attention or Mamba module, so no KV cache spec: they join no group;
    nor do KV-sharing layers (Gemma 3n / 4). Each kind's blocks are counted in its own block size
    (``kind_block_size``).
    """
    layers_of: dict[LayerAttention, list[int]] = {}
    for index, kind in enumerate(attention.layer_kinds):
        if kind != "none" and index not in attention.kv_shared_layers:
            layers_of.setdefault(kind, []).append(index)
        if attention.state is not None and attention.state.parallel:  # Falcon-H1: a MambaSpec in every layer
            layers_of.setdefault("linear", []).append(index)
    if not layers_of:
        return 0, ()
    counts = [len(layers) for layers in layers_of.values()]
    smallest, largest = min(counts), max(counts)
    group_size = largest if largest < 1.5 * smallest or len(counts) == 1 else smallest
    groups: list[KvGroup] = []
    for kind, layers in layers_of.items():
        per_request = blocks_per_request(
            kind,
            max_model_len,
            kind_block_size(attention, kind, block_size, tensor_parallel_size),
            max_in_flight_tokens,
            attention.sliding_window,
            attention.attention_chunk_size,
            state_pages_per_request(attention.state, prefix_caching),
        )
        num_groups = math.ceil(len(layers) / group_size)
        for index in range(num_groups):
            members = layers[index::num_groups]
            held = members if stage_layers is None else [layer for layer in members if layer in stage_layers]
            groups.append(KvGroup(kind, len(held), per_request))
    return max(group.layers for group in groups), tuple(groups)


def kv_capacity_for(
    attention: AttentionLayout,
    kv_space_bytes: int,
    max_model_len: int,
    block_size: int,
    kv_dtype_bytes: float,
    max_in_flight_tokens: int,
    tensor_parallel_size: int = 1,
    stage_layers: range | None = None,
    state_bytes: tuple[int, int] | None = None,
    prefix_caching: bool = True,
) -> KvCapacity:
    """The KV cache vLLM builds in ``kv_space_bytes`` on one rank, as its start-up log reports it.

    Args:
        attention: the model's attention layout.
        kv_space_bytes: memory for the KV cache on one rank (CPU: ``VLLM_CPU_KVCACHE_SPACE`` × GiB).
        max_model_len: the served context length.
        block_size: tokens per block (see ``block_size_for``).
        kv_dtype_bytes: bytes per cached element (2 for bf16/fp16, 1 for fp8, 4 for float32).
        max_in_flight_tokens: vLLM's ``max_in_flight_tokens``: ``max_num_batched_tokens`` on CPU,
            twice that on a GPU with async scheduling (the default).
        tensor_parallel_size: ranks the KV heads split over (MLA's latent does not split).
        stage_layers: one pipeline stage's decoder layers (None: the whole model, one stage).
        state_bytes: bytes of a (conv, temporal) state element of linear layers; None: a 16-bit
            model on a GPU or a CPU without AVX-512 BF16 (``state_dtype_bytes``' defaults).
        prefix_caching: vLLM's ``--enable-prefix-caching`` (the default), which sets the state pages.

    The returned block size is the one vLLM uses: raised for hybrid models (``hybrid_block_size``).
    """
    if state_bytes is None and attention.state is not None:
        state_bytes = state_dtype_bytes(attention.state)
    block_size = hybrid_block_size(
        attention, block_size, kv_dtype_bytes, state_bytes or (2, 2), tensor_parallel_size
    )
    group_size, groups = kv_groups(
        attention,
        max_model_len,
        block_size,
        max_in_flight_tokens,
        stage_layers,
        prefix_caching,
        tensor_parallel_size,
    )
    page = block_size * largest_page_bytes_per_token(attention, kv_dtype_bytes, tensor_parallel_size)
    bytes_per_block = group_size * page + indexer_page_bytes(attention, block_size, stage_layers)
    per_request = sum(group.blocks_per_request for group in groups)
    if kv_space_bytes <= 0 or bytes_per_block <= 0 or per_request <= 0:
        return KvCapacity(0, block_size, 0, 0.0, per_request, bytes_per_block, max_model_len, groups)
    num_blocks = kv_space_bytes // bytes_per_block
    concurrency = num_blocks / per_request
    tokens = int(concurrency * max_model_len)
    return KvCapacity(
        num_blocks, block_size, tokens, concurrency, per_request, bytes_per_block, max_model_len, groups
    )


def kv_bytes_per_token(
    attention: AttentionLayout,
    kv_dtype_bytes: float,
    tensor_parallel_size: int = 1,
    stage_layers: range | None = None,
) -> int:
    """KV bytes one token takes over the attention layers of one rank (of ``stage_layers``' stage).

    As if every attention layer kept every token; linear layers keep a fixed state, no per-token KV,
    layers without a mixer (kind "none") and KV-sharing layers nothing; Gemma 4's full layers their
    own heads.
    Layers with a sparse-attention indexer add its key cache (``indexer_page_bytes``).
    """
    kinds = attention.layer_kinds
    held = (
        range(len(kinds))
        if stage_layers is None
        else range(len(kinds))[stage_layers.start : stage_layers.stop]
    )
    per_token = sum(
        attention.bytes_per_token_of(kinds[index], kv_dtype_bytes, tensor_parallel_size)
        for index in held
        if attention.caches_kv(index)
    )
    return per_token + indexer_page_bytes(attention, 1, stage_layers)
