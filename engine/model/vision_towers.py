"""Vision towers vLLM builds its own way: the Qwen-VL families (``visual``) and Pixtral (Mistral 3, LLaVA-Pixtral)."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import first_key
from engine.model.linear_shape import LinearShape
from engine.model.llava_family import layers_built, projector_bias


def qwen_vl_shapes(config: dict[str, Any]) -> tuple[list[LinearShape], int]:
    """vLLM's Qwen2VisionTransformer / Qwen2_5_VisionTransformer (qwen2_vl.py, qwen2_5_vl.py).

    Both: a Conv3d patch embedding without bias over ``temporal_patch_size`` frames, ``depth`` blocks whose
    Linears all have biases, rotary positions (no table), and the merger: a norm over the tower width, then
    two biased Linears from ``width · merge²`` to ``width · merge²`` and to the text model's width. Qwen2-VL:
    LayerNorms (weight and bias), a two-matrix MLP of ``embed_dim · mlp_ratio``, and ``hidden_size`` is the
    merger's output. Qwen2.5-VL: RMSNorms, a gated MLP (gate, up, down) of ``intermediate_size``, and the
    output is ``out_hidden_size``.
    """
    vision = config["vision_config"]
    qwen2_5 = config.get("model_type") == "qwen2_5_vl"
    if qwen2_5:
        h = int(vision.get("hidden_size") or 1280)
        out = int(first_key(vision, "out_hidden_size", default=config.get("hidden_size") or 3584))
        inner = int(vision.get("intermediate_size") or 3420)
    else:
        h = int(vision.get("embed_dim") or 1280)
        out = int(vision.get("hidden_size") or 3584)
        inner = int(h * float(vision.get("mlp_ratio") or 4))
    layers = int(vision.get("depth") or 32)
    patch = int(vision.get("patch_size") or 14)
    frames = int(vision.get("temporal_patch_size") or 2)
    channels = int(first_key(vision, "in_channels", "in_chans", default=3))
    merged = h * int(vision.get("spatial_merge_size") or 2) ** 2
    shapes = [
        LinearShape("vision.patch_embedding", "vision", channels * frames * patch * patch, h, 1),
        LinearShape("vision.attn.qkvo", "vision", h, h, 4 * layers),
    ]
    if qwen2_5:
        shapes += [
            LinearShape("vision.mlp.gate_up_proj", "vision", h, 2 * inner, layers),
            LinearShape("vision.mlp.down_proj", "vision", inner, h, layers),
        ]
        mlp_biases, norm_params = 2 * inner + h, h  # RMSNorm: a weight only
    else:
        shapes += [
            LinearShape("vision.mlp.fc1", "vision", h, inner, layers),
            LinearShape("vision.mlp.fc2", "vision", inner, h, layers),
        ]
        mlp_biases, norm_params = inner + h, 2 * h  # LayerNorm: weight and bias
    shapes += [
        LinearShape("multi_modal_projector.merger.mlp.0", "vision", merged, merged, 1),
        LinearShape("multi_modal_projector.merger.mlp.2", "vision", merged, out, 1),
    ]
    block_vectors = 4 * h + mlp_biases + 2 * norm_params  # qkv and proj biases, the MLP's, norm1 and norm2
    vectors = layers * block_vectors + norm_params + merged + out  # the merger's ln_q and its two biases
    return shapes, vectors


# Qwen3VLVisionConfig's and Qwen3VLMoeVisionConfig's deepstack_visual_indexes; Qwen3.5's vision configs have none.
_DEEPSTACK_DEFAULTS = {"qwen3_vl": (8, 16, 24), "qwen3_vl_moe": (8, 16, 24)}


def qwen3_vl_shapes(config: dict[str, Any]) -> tuple[list[LinearShape], int]:
    """vLLM's Qwen3_VisionTransformer (qwen3_vl.py), for Qwen3-VL, Qwen3-VL-MoE, Qwen3.5 and Qwen3.5-MoE.

    A Conv3d patch embedding with a bias, a learned position table of ``num_position_embeddings``, blocks of
    LayerNorms and biased qkv / proj / linear_fc1 / linear_fc2, the merger (a LayerNorm over the tower width,
    then two biased Linears), and one more merger per ``deepstack_visual_indexes`` entry whose LayerNorm is
    over the merged width (``use_postshuffle_norm``).
    """
    vision = config["vision_config"]
    h = int(vision.get("hidden_size") or 1152)
    inner = int(vision.get("intermediate_size") or 4304)
    out = int(vision.get("out_hidden_size") or 3584)
    layers = int(vision.get("depth") or 27)
    patch = int(vision.get("patch_size") or 16)
    frames = int(vision.get("temporal_patch_size") or 2)
    channels = int(vision.get("in_channels") or 3)
    merged = h * int(vision.get("spatial_merge_size") or 2) ** 2
    default_deepstack = _DEEPSTACK_DEFAULTS.get(str(config.get("model_type")), ())
    deepstack = len(vision.get("deepstack_visual_indexes", default_deepstack) or ())
    mergers = 1 + deepstack
    shapes = [
        LinearShape("vision.patch_embedding", "vision", channels * frames * patch * patch, h, 1),
        LinearShape("vision.attn.qkvo", "vision", h, h, 4 * layers),
        LinearShape("vision.mlp.linear_fc1", "vision", h, inner, layers),
        LinearShape("vision.mlp.linear_fc2", "vision", inner, h, layers),
        LinearShape("multi_modal_projector.merger.linear_fc1", "vision", merged, merged, mergers),
        LinearShape("multi_modal_projector.merger.linear_fc2", "vision", merged, out, mergers),
    ]
    block_vectors = 4 * h + inner + h + 2 * 2 * h  # qkv, proj, fc1, fc2 biases; norm1 and norm2
    vectors = h + int(vision.get("num_position_embeddings") or 2304) * h + layers * block_vectors
    vectors += mergers * (merged + out) + 2 * h + deepstack * 2 * merged  # biases; LayerNorms
    return shapes, vectors


def pixtral_tower_shapes(config: dict[str, Any]) -> tuple[list[LinearShape], int]:
    """vLLM's PixtralHFVisionModel (pixtral.py), built up to the deepest ``vision_feature_layer``.

    A Conv2d patch embedding without bias, ``ln_pre`` (RMSNorm), and blocks of bias-free q/k/v/o
    (``num_attention_heads × head_dim`` wide) and a gated MLP, each with two RMSNorms; rotary positions, no
    post-norm. vLLM's ``get_layer_index`` maps a negative feature layer ``i`` to ``layers + i + 1``; the feature
    layer defaults to transformers' -1 for Mistral 3 and -2 for LLaVA (Pixtral-12B in HF form).
    """
    vision = config["vision_config"]
    h = int(vision.get("hidden_size") or 1024)
    heads = int(vision.get("num_attention_heads") or 16)
    width = heads * int(vision.get("head_dim") or h // heads)
    inner = int(vision.get("intermediate_size") or 4096)
    patch = int(vision.get("patch_size") or 16)
    channels = int(vision.get("num_channels") or 3)
    layers = layers_built(config, int(vision.get("num_hidden_layers") or 24))
    shapes = [
        LinearShape("vision.patch_embedding", "vision", channels * patch * patch, h, 1),
        LinearShape("vision.attn.qkv", "vision", h, 3 * width, layers),
        LinearShape("vision.attn.o_proj", "vision", width, h, layers),
        LinearShape("vision.mlp.gate_up_proj", "vision", h, 2 * inner, layers),
        LinearShape("vision.mlp.down_proj", "vision", inner, h, layers),
    ]
    return shapes, h + layers * 2 * h  # ln_pre, attention_norm and ffn_norm


def mistral3_projector_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """vLLM's Mistral3MultiModalProjector: an RMSNorm, the patch merger, then linear_1 and linear_2.

    The patch merger's ``merging_layer`` is a plain ``nn.Linear`` (built without the quantization config), so
    its weights count as vectors that stay 16-bit; the two projections have biases only with
    ``multimodal_projector_bias`` (transformers' default: False).
    """
    vision = config["vision_config"]
    h = int(vision.get("hidden_size") or 1024)
    merged = h * int(config.get("spatial_merge_size") or 2) ** 2
    shapes = [
        LinearShape("multi_modal_projector.linear_1", "vision", h, text_hidden, 1),
        LinearShape("multi_modal_projector.linear_2", "vision", text_hidden, text_hidden, 1),
    ]
    biases = 2 * text_hidden if projector_bias(config) else 0
    return shapes, h + merged * h + biases
