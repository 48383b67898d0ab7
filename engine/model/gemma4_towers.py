"""Gemma 4's vision and audio towers and their embedders, from ``vision_config`` / ``audio_config``, as vLLM builds them."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import first_key, with_defaults
from engine.model.linear_shape import LinearShape

# Multimodal configs whose towers are Gemma 4's: vLLM 0.32 gemma4_mm.py::Gemma4ForConditionalGeneration builds
# them with transformers' AutoModel.from_config (Gemma4VisionModel, Gemma4AudioModel), swaps each nn.Linear for
# a ReplicatedLinear of the same shape (recursive_replace_linear) and adds its own Gemma4MultimodalEmbedder.
# gemma4_unified.py::Gemma4UnifiedForConditionalGeneration builds no tower: an encoder-free vision_embedder and
# the same embedders.
# transformers' Gemma4VisionConfig / Gemma4AudioConfig defaults, for keys a config.json leaves out.
_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 16,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "head_dim": 64,
    "patch_size": 16,
    "position_embedding_size": 10 * 1024,
    "use_clipped_linears": False,
    "standardize": False,
}
_AUDIO_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "subsampling_conv_channels": [128, 32],
    "conv_kernel_size": 5,
    "use_clipped_linears": True,
    "output_proj_dims": 1536,
}
# transformers' Gemma4UnifiedVisionConfig / Gemma4UnifiedAudioConfig defaults.
_UNIFIED_VISION_DEFAULTS: dict[str, Any] = {
    "patch_size": 16,
    "pooling_kernel_size": 3,
    "mm_embed_dim": 3840,
    "mm_posemb_size": 1120,
    "output_proj_dims": 3840,
}
_UNIFIED_AUDIO_EMBED_DIM = 640
# Gemma4ClippableLinear with use_clipped_linears: input_min, input_max, output_min, output_max, one scalar
# each, persistent buffers the checkpoint ships and vLLM's AutoWeightsLoader loads.
_CLIP_BOUNDS = 4


def _vision(vision: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """Gemma4VisionModel + embed_vision.

    Gemma4VisionPatchEmbedder: input_proj (3·patch² → h, a plain Linear, no bias) and the x/y
    position_embedding_table (2 × position_embedding_size × h). Each Gemma4VisionEncoderLayer: q/k/v/o and
    gate/up/down, all Gemma4ClippableLinear without bias, q_norm and k_norm (head_dim; v_norm has no weight),
    four RMSNorms. The pooler has no weights; ``standardize`` adds std_bias and std_scale (h each).
    Gemma4MultimodalEmbedder: embedding_projection (h → text hidden; vision has no output_proj_dims), its
    pre-projection RMSNorm without weight.
    """
    v = with_defaults(vision, _VISION_DEFAULTS)
    h, inner, layers = int(v["hidden_size"]), int(v["intermediate_size"]), int(v["num_hidden_layers"])
    heads, kv_heads, head_dim = (
        int(v["num_attention_heads"]),
        int(v["num_key_value_heads"]),
        int(v["head_dim"]),
    )
    patch = int(v["patch_size"])
    shapes = [
        LinearShape("vision.patch_embedder.input_proj", "vision", 3 * patch * patch, h, 1),
        LinearShape("vision.self_attn.q_proj", "vision", h, heads * head_dim, layers),
        LinearShape("vision.self_attn.k_proj", "vision", h, kv_heads * head_dim, layers),
        LinearShape("vision.self_attn.v_proj", "vision", h, kv_heads * head_dim, layers),
        LinearShape("vision.self_attn.o_proj", "vision", heads * head_dim, h, layers),
        LinearShape("vision.mlp.gate_proj", "vision", h, inner, layers),
        LinearShape("vision.mlp.up_proj", "vision", h, inner, layers),
        LinearShape("vision.mlp.down_proj", "vision", inner, h, layers),
        LinearShape("embed_vision.embedding_projection", "vision", h, text_hidden, 1),
    ]
    vectors = 2 * int(v["position_embedding_size"]) * h + layers * (2 * head_dim + 4 * h)
    if v["use_clipped_linears"]:
        vectors += layers * 7 * _CLIP_BOUNDS
    if v["standardize"]:
        vectors += 2 * h
    return shapes, vectors


def _audio(audio: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """Gemma4AudioModel + embed_audio, which vLLM builds only when the config has an ``audio_config``.

    Gemma4AudioSubSampleConvProjection: two 3×3 Conv2d without bias (1 → c0, c0 → c1), each with a LayerNorm
    without bias, then input_proj_linear ((c0 // 4)·c1 → h). Each Gemma4AudioLayer (head_dim = h // heads):
    two feed-forwards (h → 4h → h, pre/post RMSNorm), attention (q/k/v h → heads·head_dim, post h → h, a plain
    relative_k_proj h → heads·head_dim, per_dim_scale head_dim), the light conv (linear_start h → 2h, a
    depthwise Conv1d h × kernel without bias, linear_end h → h, two RMSNorms) and three RMSNorms. Ten of those
    Linears are Gemma4ClippableLinear. output_proj (h → output_proj_dims) has a bias; the embedder projects
    output_proj_dims → text hidden. Convolutions stay vectors: vLLM replaces Linears only.
    """
    a = with_defaults(audio, _AUDIO_DEFAULTS)
    h, layers, heads = int(a["hidden_size"]), int(a["num_hidden_layers"]), int(a["num_attention_heads"])
    first, second = (int(channels) for channels in a["subsampling_conv_channels"][:2])
    attention, out = heads * (h // heads), int(a["output_proj_dims"])
    shapes = [
        LinearShape(
            "audio.subsample_conv_projection.input_proj_linear", "vision", (first // 4) * second, h, 1
        ),
        LinearShape("audio.feed_forward.ffw_layer_1", "vision", h, 4 * h, 2 * layers),
        LinearShape("audio.feed_forward.ffw_layer_2", "vision", 4 * h, h, 2 * layers),
        LinearShape("audio.self_attn.qkv_proj", "vision", h, attention, 3 * layers),
        LinearShape("audio.self_attn.post", "vision", h, h, layers),
        LinearShape("audio.self_attn.relative_k_proj", "vision", h, attention, layers),
        LinearShape("audio.lconv1d.linear_start", "vision", h, 2 * h, layers),
        LinearShape("audio.lconv1d.linear_end", "vision", h, h, layers),
        LinearShape("audio.output_proj", "vision", h, out, 1),
        LinearShape("embed_audio.embedding_projection", "vision", out, text_hidden, 1),
    ]
    vectors = 9 * first + first + 9 * first * second + second  # the two convolutions and their LayerNorms
    per_layer = 4 * h + (h // heads) + h * int(a["conv_kernel_size"]) + 2 * h + 3 * h
    vectors += layers * per_layer + out  # output_proj's bias
    if a["use_clipped_linears"]:
        vectors += layers * 10 * _CLIP_BOUNDS
    return shapes, vectors


def _unified(
    vision: dict[str, Any] | None, audio: dict[str, Any] | None, text_hidden: int
) -> tuple[list[LinearShape], int]:
    """Gemma 4 Unified's encoder-free embedders (gemma4_unified.py).

    Gemma4UnifiedVisionEmbedder: patch_ln1 (LayerNorm over 3·(patch_size·pooling_kernel_size)² with bias),
    patch_dense (→ mm_embed_dim, with bias), patch_ln2, pos_embedding (mm_posemb_size × 2 × mm_embed_dim) and
    pos_norm; embed_vision projects output_proj_dims → text hidden. embed_audio (with an ``audio_config``)
    projects the raw frames, audio_embed_dim wide (its hidden_size / output_proj_dims), → text hidden.
    """
    shapes: list[LinearShape] = []
    vectors = 0
    if vision is not None:
        v = with_defaults(vision, _UNIFIED_VISION_DEFAULTS)
        patch_dim = 3 * (int(v["patch_size"]) * int(v["pooling_kernel_size"])) ** 2
        embed, out = int(v["mm_embed_dim"]), int(v["output_proj_dims"])
        shapes += [
            LinearShape("vision_embedder.patch_dense", "vision", patch_dim, embed, 1),
            LinearShape("embed_vision.embedding_projection", "vision", out, text_hidden, 1),
        ]
        # patch_ln1; patch_dense's bias; patch_ln2 and pos_norm; the position table
        vectors += 2 * patch_dim + embed + 2 * 2 * embed + int(v["mm_posemb_size"]) * 2 * embed
    if audio is not None:
        # audio_embed_dim is also the config class's hidden_size and output_proj_dims (properties)
        keys = ("audio_embed_dim", "output_proj_dims", "hidden_size")
        frames = int(first_key(audio, *keys, default=_UNIFIED_AUDIO_EMBED_DIM))
        shapes.append(LinearShape("embed_audio.embedding_projection", "vision", frames, text_hidden, 1))
    return shapes, vectors


def gemma4_tower_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """Gemma 4's vision tower and audio tower (each where the config has its sub-config) with their embedders.

    vLLM builds the vision tower unconditionally (a config without ``vision_config`` fails to load there), the
    audio tower only with an ``audio_config``; quant-tui counts a tower only where its sub-config is given.
    """
    vision, audio = config.get("vision_config"), config.get("audio_config")
    if config.get("model_type") == "gemma4_unified":
        return _unified(
            vision if isinstance(vision, dict) else None,
            audio if isinstance(audio, dict) else None,
            text_hidden,
        )
    shapes: list[LinearShape] = []
    vectors = 0
    if isinstance(vision, dict):
        shapes, vectors = _vision(vision, text_hidden)
    if isinstance(audio, dict):
        audio_shapes, audio_vectors = _audio(audio, text_hidden)
        shapes, vectors = shapes + audio_shapes, vectors + audio_vectors
    return shapes, vectors
