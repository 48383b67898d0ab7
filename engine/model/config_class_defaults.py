"""What transformers' config classes and vLLM's model files assume per model type where config.json is silent."""

from __future__ import annotations

from typing import Any

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
    "granitemoehybrid",
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
    "qwen3_next",
    "qwen3_5_text",
    "qwen3_5_moe_text",
}

# Defaults of transformers' config classes that real config.json files leave out.
CONFIG_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {"vocab_size": 262_208, "tie_word_embeddings": True},
    "gemma2": {"tie_word_embeddings": True},
}
