"""Parameters of the attention mixers (full / sliding / MLA / KV-sharing, Gated DeltaNet) from config.json."""

from __future__ import annotations

from engine.model.architecture import Architecture
from engine.model.layer_variants import AttentionVariant
from engine.model.linear_shape import LinearShape
from engine.model.mamba_params import mamba_mixer_shapes

# Full-attention layers of these gate their output with a second half of q_proj (vLLM's
# Qwen3NextAttention: ``attn_output_gate``, True unless the config says otherwise).
_OUTPUT_GATED = {"qwen3_next", "qwen3_5_text", "qwen3_5_moe_text"}
# attention_bias puts a bias on q, k and v only, not on o_proj (vLLM's Qwen2Attention, Glm4Attention,
# Glm4MoeAttention).
_NO_O_PROJ_BIAS = ("qwen2", "glm4")


def attention_shapes(
    arch: Architecture, layers: int, variant: AttentionVariant | None = None
) -> tuple[list[LinearShape], int]:
    """The attention projections of ``layers`` layers of one shape and their vector parameters per layer."""
    text, h, heads = arch.text, arch.hidden_size, arch.num_attention_heads
    variant = variant or AttentionVariant(arch.num_kv_heads, arch.head_dim)
    if arch.attention.mla:
        rope = int(text.get("qk_rope_head_dim") or 0)
        nope = int(text.get("qk_nope_head_dim") or 0)
        v_dim = int(text.get("v_head_dim") or 0)
        kv_rank = int(text["kv_lora_rank"])
        q_rank = text.get("q_lora_rank")
        shapes = []
        vectors = kv_rank  # kv_a_layernorm
        if q_rank:
            shapes += [
                LinearShape("self_attn.q_a_proj", "attention", h, int(q_rank), layers),
                LinearShape("self_attn.q_b_proj", "attention", int(q_rank), heads * (nope + rope), layers),
            ]
            vectors += int(q_rank)  # q_a_layernorm
        else:
            shapes.append(LinearShape("self_attn.q_proj", "attention", h, heads * (nope + rope), layers))
        shapes += [
            LinearShape("self_attn.kv_a_proj_with_mqa", "attention", h, kv_rank + rope, layers),
            LinearShape("self_attn.kv_b_proj", "attention", kv_rank, heads * (nope + v_dim), layers),
            LinearShape("self_attn.o_proj", "attention", heads * v_dim, h, layers),
        ]
        if text.get("index_topk") is not None and q_rank:
            # DeepSeek Sparse Attention's indexer (vLLM's DeepseekV32Indexer; the checkpoint ships it in
            # every layer): wq_b is quantized with the model, wk + weights_proj are one unquantized
            # Linear (quant_config=None), k_norm a LayerNorm (weight + bias).
            index_heads, index_dim = (
                int(text.get("index_n_heads") or 64),
                int(text.get("index_head_dim") or 128),
            )
            shapes.append(
                LinearShape(
                    "self_attn.indexer.wq_b", "attention", int(q_rank), index_heads * index_dim, layers
                )
            )
            vectors += h * (index_dim + index_heads) + 2 * index_dim
        return shapes, vectors
    head_dim = variant.head_dim
    q_out = heads * head_dim
    kv_out = 0 if variant.kv_shared else variant.kv_heads * head_dim  # KV-sharing layers: q_proj only
    gated = arch.model_type in _OUTPUT_GATED and text.get("attn_output_gate", True)
    if arch.model_type == "phi3":  # one fused projection in the checkpoint
        shapes = [LinearShape("self_attn.qkv_proj", "attention", h, q_out + 2 * kv_out, layers)]
    else:
        shapes = [
            LinearShape("self_attn.q_proj", "attention", h, q_out * (2 if gated else 1), layers),
            LinearShape("self_attn.k_proj", "attention", h, kv_out, layers),
            LinearShape("self_attn.v_proj", "attention", h, kv_out, layers),
        ][: 1 if variant.kv_shared else 3]
    shapes.append(LinearShape("self_attn.o_proj", "attention", q_out, h, layers))
    vectors = 0
    if arch.attention_bias:
        vectors += q_out + 2 * kv_out
        if not arch.model_type.startswith(_NO_O_PROJ_BIAS):
            vectors += h  # o_proj's bias
    if arch.qk_norm:
        vectors += (1 if variant.kv_shared else 2) * head_dim  # no k_norm without k_proj
    if arch.model_type == "gpt_oss":
        vectors += heads  # attention sinks
    return shapes, vectors


def linear_attention_shapes(arch: Architecture, layers: int) -> tuple[list[LinearShape], int]:
    """Gated DeltaNet projections of ``layers`` layers and their vector parameters per layer.

    vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py::QwenGatedDeltaNetAttention:
    in_proj_qkvz (q, k: key heads × key dim; v, z: value heads × value dim), in_proj_ba (one b and
    one a per value head), out_proj; conv1d (conv_dim × kernel), dt_bias, A_log and the gated
    RMSNorm (value dim) are vectors here. Qwen3.5's checkpoint splits the same rows into
    in_proj_qkv / in_proj_z / in_proj_b / in_proj_a. Mamba layers: ``mamba_params.mamba_mixer_shapes``.
    """
    state = arch.attention.state
    if state is None or not layers:
        return [], 0
    h = arch.hidden_size
    keys, values = state.key_heads * state.key_dim, state.value_heads * state.value_dim
    if state.mixer != "gdn":
        return mamba_mixer_shapes(arch, layers)
    shapes = [
        LinearShape("linear_attn.in_proj_qkvz", "linear_attention", h, 2 * keys + 2 * values, layers),
        LinearShape("linear_attn.in_proj_ba", "linear_attention", h, 2 * state.value_heads, layers),
        LinearShape("linear_attn.out_proj", "linear_attention", values, h, layers),
    ]
    vectors = state.conv_dim * state.conv_kernel + 2 * state.value_heads + state.value_dim
    return shapes, vectors
