"""Nemotron Nano VL v2's C-RADIO tower and ``mlp1`` (``NemotronH_Nano_VL_V2``), and the Omni models' sound
encoder, as vLLM's nano_nemotron_vl.py, radio.py and parakeet.py build them."""

from __future__ import annotations

from typing import Any

from engine.model.config_json import first_key, text_config
from engine.model.intern_vit import intern_vit_blocks
from engine.model.linear_shape import LinearShape
from engine.model.parakeet_encoder import parakeet_shapes

# vLLM's RadioConfig reads a tower's (hidden, layers, MLP) from its timm name (VIT_TIMM_DIM_BY_NAME).
_TIMM_DIMS: dict[str, tuple[int, int, int]] = {
    "vit_small_patch16_224": (384, 12, 1536),
    "vit_base_patch16_224": (768, 12, 3072),
    "vit_large_patch16_224": (1024, 24, 4096),
    "vit_huge_patch16_224": (1280, 32, 5120),
}
# RadioConfig's defaults for the keys that change a parameter count.
_CPE_MAX_SIZE, _PATCH = 2048, 16


def radio_shapes(config: dict[str, Any], text_hidden: int) -> tuple[list[LinearShape], int] | None:
    """RadioModel and mlp1, and with a ``sound_config`` the Omni models' ProjectedParakeet (``parakeet_shapes``);
    none of them is built with the quantization config. None for a timm name vLLM does not map, or a sound
    config ``parakeet_shapes`` cannot size.

    The blocks are InternViT's (``intern_vit_blocks``), with RadioConfig's defaults for the ``args`` that set
    them: qkv biased with ``qkv_bias`` (True), q/k RMSNorms with ``qk_normalization`` (False), LayerNorms unless
    ``norm_type`` is ``rms_norm``. The patch generator: a bias-free Linear over 3 · T · patch² pixels (an image
    embedder, and with ``video_temporal_patch_size`` T > 1 a separate video embedder), one position per patch of
    ``cpe_max_size`` (rounded to the patch), and a class token per teacher (with ``cls_token_per_teacher``) plus
    ``register_multiple − (class tokens mod register_multiple)`` registers. mlp1: an RMSNorm over the pixel-
    shuffled width (``vit_hidden_size · round(1 / downsample_ratio)²``) and two bias-free Linears, through
    ``projector_hidden_size`` into the text width; a LayerNorm over ``vit_hidden_size`` before it when the text
    model has MTP layers (``vision_final_layernorm``).
    """
    vision = config["vision_config"]
    args = vision.get("args") or {}
    dims = _TIMM_DIMS.get(str(args.get("model")))
    if dims is None:
        return None
    h, layers, inner = dims
    patch = int(first_key(vision, "patch_size", default=_PATCH))
    temporal = int(first_key(vision, "video_temporal_patch_size", default=1))
    # RadioInternVisionModel rounds cpe_max_size to a whole number of patches (ViTPatchGenerator's ceil then
    # keeps it); one position per patch of that square.
    positions = round(int(first_key(args, "cpe_max_size", default=_CPE_MAX_SIZE)) / patch) ** 2
    teachers = {teacher["name"] for teacher in args.get("teachers") or []}
    class_tokens = len(teachers) if args.get("cls_token_per_teacher") else 1
    multiple = int(args.get("register_multiple") or 0)
    registers = multiple - class_tokens % multiple if multiple else 0
    shapes, block_vectors = intern_vit_blocks(
        h,
        inner,
        layers,
        qkv_bias=bool(args.get("qkv_bias", True)),
        qk_normalization=bool(args.get("qk_normalization", False)),
        layer_norm=args.get("norm_type", "layer_norm") == "layer_norm",
    )
    shapes.append(LinearShape("vision.patch_generator.embedder", "vision", 3 * patch * patch, h, 1))
    if temporal > 1:
        shapes.append(
            LinearShape("vision.patch_generator.video_embedder", "vision", 3 * temporal * patch**2, h, 1)
        )
    embeddings = positions * h + (class_tokens + registers) * h
    vit_hidden = int(first_key(config, "vit_hidden_size", default=h))
    shuffled = vit_hidden * round(1 / float(first_key(config, "downsample_ratio", default=0.5))) ** 2
    projector_hidden = int(config["projector_hidden_size"])
    shapes += [
        LinearShape("multi_modal_projector.linear_1", "vision", shuffled, projector_hidden, 1),
        LinearShape("multi_modal_projector.linear_2", "vision", projector_hidden, text_hidden, 1),
    ]
    final_norm = 2 * vit_hidden if int(text_config(config).get("num_nextn_predict_layers") or 0) > 0 else 0
    vectors = block_vectors + embeddings + shuffled + final_norm
    if not isinstance(sound := config.get("sound_config"), dict):
        return shapes, vectors
    sound_read = parakeet_shapes(sound, text_hidden)
    if sound_read is None:
        return None
    return shapes + sound_read[0], vectors + sound_read[1]
