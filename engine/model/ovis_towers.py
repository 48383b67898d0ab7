"""Ovis 2.5 / 2.6 (``ovis2_5``, ``ovis2_6``, ``ovis2_6_moe``) as vLLM's ovis2_5.py builds its visual tokenizer and
visual embedding table."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import first_key
from engine.model.linear_shape import LinearShape
from engine.model.vit_towers import vit_blocks

# ovis2_5.py's INDICATOR_IDS: visual-vocabulary rows the head does not predict.
_INDICATOR_TOKENS = 4


def ovis2_5_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int] | None:
    """VisualTokenizer (Siglip2NavitModel with the quantization config, its head without) and the ``vte``
    embedding of ``visual_vocab_size`` rows into the text width; None without a ``siglip2_navit`` vit_config.

    Siglip2NavitModel: a patch embedding over ``num_channels · patch²`` with a bias (a Linear with ``num_patches``
    > 0, else a Conv2d), with ``preserve_original_pe`` a position per patch (``num_patches``, or (image_size /
    patch)² for the Conv2d), blocks of a biased fused qkv, out_proj and fc1 / fc2 with two LayerNorms, rotary
    positions (no table), and post_layernorm. The head: a bias-free Linear from hidden · ``hidden_stride``² to
    ``visual_vocab_size`` − 4 and a LayerNorm over it.
    """
    vit = config.get("vit_config")
    if not isinstance(vit, dict) or vit.get("model_type") != "siglip2_navit" or not vit.get("hidden_size"):
        return None
    h, inner = int(vit["hidden_size"]), int(vit["intermediate_size"])
    layers, patch = int(vit["num_hidden_layers"]), int(vit["patch_size"])
    channels = int(first_key(vit, "num_channels", default=3))
    num_patches = int(first_key(vit, "num_patches", default=-1))
    positions = num_patches if num_patches > 0 else (int(vit.get("image_size") or 0) // patch) ** 2
    stride = int(first_key(vit, "hidden_stride", default=1))
    vocabulary = int(config["visual_vocab_size"])
    head = vocabulary - _INDICATOR_TOKENS
    shapes, vectors = vit_blocks(h, inner, layers)
    shapes += [
        LinearShape("vision.patch_embedding", "vision", channels * patch * patch, h, 1),
        LinearShape("visual_tokenizer.head", "vision", h * stride * stride, head, 1),
    ]
    vectors += (
        h + (positions * h if vit.get("preserve_original_pe") else 0) + 2 * h
    )  # patch bias, positions, post
    return shapes, vectors + 2 * head + vocabulary * text_hidden
