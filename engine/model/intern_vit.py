"""InternVL's vision part (``internvl_chat``) as vLLM's intern_vit.py and internvl.py build it: InternViT and mlp1."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import first_key, with_defaults
from engine.model.linear_shape import LinearShape

# InternVisionConfig's defaults (InternViT-6B) in OpenGVLab's remote code, for keys a config.json leaves out.
_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 3200,
    "intermediate_size": 12800,
    "num_hidden_layers": 48,
    "image_size": 224,
    "patch_size": 14,
    "qkv_bias": False,
    "qk_normalization": True,
    "norm_type": "rms_norm",
}


def intern_vit_blocks(
    h: int, inner: int, layers: int, *, qkv_bias: bool, qk_normalization: bool, layer_norm: bool
) -> tuple[list[LinearShape], int]:
    """``layers`` of intern_vit.py's InternVisionEncoderLayer (InternViT's, and radio.py's subclass).

    A block: a fused qkv (biased with ``qkv_bias``), a biased proj and fc1 / fc2, q/k RMSNorms with
    ``qk_normalization``, norm1 / norm2 (LayerNorms with ``layer_norm``, else RMSNorms) and the layer scales
    ls1 / ls2. Returns the matrices and the blocks' vector parameters.
    """
    shapes = [
        LinearShape("vision.attn.qkv", "vision", h, 3 * h, layers),
        LinearShape("vision.attn.proj", "vision", h, h, layers),
        LinearShape("vision.mlp.fc1", "vision", h, inner, layers),
        LinearShape("vision.mlp.fc2", "vision", inner, h, layers),
    ]
    norm = 2 * h if layer_norm else h
    block = (3 * h if qkv_bias else 0) + h + inner + h  # qkv, proj, fc1, fc2 biases
    block += (2 * h if qk_normalization else 0) + 2 * norm + 2 * h  # q/k norms, norm1/2, ls1/2
    return shapes, layers * block


def intern_vit_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int]:
    """InternVisionModel up to ``select_layer``, and ``mlp1`` (built of ``nn.Linear``: 16-bit vectors).

    The embeddings: a class token, a biased Conv2d patch embedding over 3 channels and a position per patch
    (and the class token) of the config's ``image_size``. A block: qkv (biased with ``qkv_bias``), proj and
    fc1 / fc2 with biases, q/k RMSNorms with ``qk_normalization``, norm1 / norm2 (RMSNorm or LayerNorm by
    ``norm_type``) and the layer scales ls1 / ls2; no final norm. ``select_layer`` -1 builds every layer,
    ``-k`` one fewer per step, ``k`` >= 0 the first ``k + 1``. mlp1: a LayerNorm over the pixel-shuffled width
    (``hidden · (1 / downsample_ratio)²``), then two biased Linears into the text model's width.
    """
    vision = with_defaults(config["vision_config"], _VISION_DEFAULTS)
    h, inner = int(vision["hidden_size"]), int(vision["intermediate_size"])
    patch, image = int(vision["patch_size"]), int(vision["image_size"])
    select = int(first_key(config, "select_layer", default=-1))
    total = int(vision["num_hidden_layers"])
    layers = total + select + 1 if select < 0 else select + 1
    blocks, block_vectors = intern_vit_blocks(
        h,
        inner,
        layers,
        qkv_bias=bool(vision["qkv_bias"]),
        qk_normalization=bool(vision["qk_normalization"]),
        layer_norm=vision["norm_type"] == "layer_norm",
    )
    shapes = [LinearShape("vision.patch_embedding", "vision", 3 * patch * patch, h, 1), *blocks]
    embeddings = h + h + ((image // patch) ** 2 + 1) * h  # class token, patch bias, positions
    shuffled = h * int(1 / float(first_key(config, "downsample_ratio", default=0.5))) ** 2
    mlp1 = 2 * shuffled + shuffled * text_hidden + text_hidden + text_hidden * text_hidden + text_hidden
    return shapes, block_vectors + embeddings + mlp1
