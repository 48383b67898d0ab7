"""What transformers' config classes and vLLM's model files assume per model type where config.json is silent."""

from __future__ import annotations

from typing import Any

# Gemma 4's text model under both its config types: Gemma4UnifiedForConditionalGeneration builds the
# same Gemma4ForCausalLM from a "gemma4_unified_text" text_config (vLLM 0.32 gemma4_unified.py).
GEMMA4_TEXT_MODEL_TYPES = frozenset({"gemma4_text", "gemma4_unified_text"})
GEMMA3N_TEXT_MODEL_TYPES = frozenset({"gemma3n_text"})
# Draft checkpoints vLLM builds only under --speculative-config (config/speculative.py turns them into
# Gemma4MTPModel): never a model to serve on its own.
DRAFT_ONLY_MODEL_TYPES = frozenset({"gemma4_assistant", "gemma4_unified_assistant"})
# Architectures whose config class defaults tie_word_embeddings to False (PretrainedConfig says True).
UNTIED_BY_DEFAULT = {
    "llama",
    "llama4_text",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "qwen2_moe",
    "qwen3_moe",
    "phi3",
    "granite",
    "olmo2",
    "deepseek_v2",
    "deepseek_v3",
    "gpt_oss",
    "qwen3_next",
    "qwen3_5",
    "qwen3_5_text",
    "qwen3_5_moe",
    "qwen3_5_moe_text",
    "qwen3_vl_text",
    "qwen3_vl_moe_text",
    "granitemoehybrid",
    "nemotron_h",
    "jamba",
    "falcon_h1",
}
# vLLM's ModelArchConfigConvertor.is_deepseek_mla list: these cache one latent vector per layer.
MLA_MODEL_TYPES = frozenset(
    {
        "deepseek_v2",
        "deepseek_v3",
        "deepseek_v32",
        "deepseek_mtp",
        "glm_moe_dsa",
        "glm4_moe_lite",
        "kimi_k2",
        "kimi_linear",
        "longcat_flash",
        "pangu_ultra_moe",
    }
)
# transformers' sliding_window_pattern defaults (layer i slides unless (i + 1) % pattern == 0).
SLIDING_PATTERN_DEFAULTS = {"gemma3": 6, "gemma3_text": 6, "cohere2": 4}
ALTERNATING_SLIDING = {"gemma2", "gpt_oss"}  # even layers slide, odd layers are full
QK_NORM_MODEL_TYPES = {
    "qwen3",
    "qwen3_moe",
    "olmo2",
    "gemma3_text",
    "gemma3",
    "gemma3n_text",  # Gemma3nAttention: q_norm, k_norm (v_norm has no weight)
    "qwen3_next",
    "qwen3_5_text",
    "qwen3_5_moe_text",
    "qwen3_vl_text",  # vLLM's Qwen3-VL language models are built of Qwen3 / Qwen3-MoE decoder layers
    "qwen3_vl_moe_text",
    "lfm2",  # Lfm2Attention: q_layernorm, k_layernorm
    "lfm2_moe",
}

# Defaults of transformers' config classes that real config.json files leave out.
CONFIG_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {"vocab_size": 262_208, "tie_word_embeddings": True},
    "gemma2": {"tie_word_embeddings": True},
    "gemma3n_text": {
        "vocab_size": 262_400,
        "vocab_size_per_layer_input": 262_144,
        "tie_word_embeddings": True,
    },
    # NemotronHConfig.head_dim (vLLM's NemotronHAttention reads it before hidden_size // heads); the
    # remote-code configs' attention_head_dim is not read.
    "nemotron_h": {"head_dim": 128},
    # Ernie4_5_MoeConfig's MoE defaults (its moe_layer_end_index -1 is the last layer).
    "ernie4_5_moe": {
        "moe_num_experts": 64,
        "moe_k": 6,
        "moe_intermediate_size": 1536,
        "moe_num_shared_experts": 2,
        "moe_layer_start_index": 1,
        "moe_layer_end_index": -1,
        "moe_layer_interval": 1,
    },
}

# DeepseekV32Indexer.quant_block_size: its key cache keeps one float32 scale per 128 fp8 values.
INDEXER_QUANT_BLOCK = 128


def sparse_indexer_cache(text: dict[str, Any], num_layers: int) -> tuple[int, tuple[int, ...]]:
    """DeepSeek Sparse Attention's indexer key cache: (bytes per token, decoder layers that own one).

    vllm/models/deepseek_v32/attention.py::``DeepseekV32Attention`` (deepseek_v2.py's
    ``DeepseekV2MLAAttention`` off CUDA): a config with ``index_topk`` is sparse; layer ``i`` has no
    indexer when ``index_topk_pattern[i] == "S"`` or, without a pattern, when
    ``max(i - index_skip_topk_offset + 1, 0) % index_topk_freq != 0`` (defaults 2 and 1: every layer).
    ``DeepseekV32Indexer`` caches ``index_head_dim`` fp8 bytes plus 4 per ``quant_block_size`` of them.
    """
    if text.get("index_topk") is None:
        return 0, ()
    head_dim = int(text.get("index_head_dim") or 128)
    pattern = text.get("index_topk_pattern")
    frequency = int(text.get("index_topk_freq") or 1)
    offset = int(text["index_skip_topk_offset"] if text.get("index_skip_topk_offset") is not None else 2)

    def has_indexer(layer: int) -> bool:
        if pattern is not None:
            return layer >= len(pattern) or pattern[layer] != "S"
        return max(layer - offset + 1, 0) % frequency == 0

    layers = tuple(layer for layer in range(num_layers) if has_indexer(layer))
    return head_dim + head_dim // INDEXER_QUANT_BLOCK * 4, layers
