"""Kimi's MoonViT towers and patch-merger projectors as vLLM builds them (kimi_vl.py, kimi_k25.py, Kimi K3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.model.config_json import first_key
from engine.model.linear_shape import LinearShape

Shapes = tuple[list[LinearShape], int]


@dataclass(frozen=True, slots=True)
class _MoonViT:
    """The sizes and switches a MoonViT and its projector are built from."""

    hidden: int
    layers: int
    inner: int
    qkv: int  # the attention's width (K3's is wider than the residual stream)
    patch: int
    positions: int  # the learned position grid, height × width
    merge: int  # patches merged into one token, kernel height × width
    layernorm: bool  # else RMSNorm, a weight only
    attn_bias: bool
    linear_bias: bool
    patch_bias: bool
    projector_v2: bool  # patchmergerv2: bias-free linears and an RMSNorm after, instead of a LayerNorm before


# MoonViTConfig (vllm/transformers_utils/configs/moonvit.py) and transformers' Kimi_K25VisionConfig share these
# defaults; KimiK3VisionConfig (vllm/transformers_utils/configs/kimi_k3.py) has its own.
_MOONVIT_DEFAULTS = {"hidden": 1152, "layers": 27, "inner": 4304, "patch": 14, "pos": 64}
_K3_DEFAULTS = {"hidden": 1024, "layers": 27, "inner": 4096, "patch": 14, "pos": 64}


def _merge(vision: dict[str, Any]) -> int:
    kernel = vision.get("merge_kernel_size") or (2, 2)
    return int(kernel[0]) * int(kernel[1])


def _sizes(vision: dict[str, Any], k3: bool) -> dict[str, int]:
    """The tower's sizes from the fields its config class reads, else that class's defaults.

    KimiK3VisionConfig reads ``vt_hidden_size`` and the like (its ``hidden_size`` is set from it); MoonViTConfig and
    transformers' Kimi_K25VisionConfig read ``hidden_size``. Kimi-K2.5's config.json sets only the ``vt_*`` fields,
    so vLLM builds the class's defaults, which are its sizes.
    """
    defaults = _K3_DEFAULTS if k3 else _MOONVIT_DEFAULTS

    def size(name: str, default: int) -> int:
        return int(first_key(vision, f"vt_{name}" if k3 else name, default=default))

    return {
        "hidden": size("hidden_size", defaults["hidden"]),
        "layers": size("num_hidden_layers", defaults["layers"]),
        "inner": size("intermediate_size", defaults["inner"]),
        "patch": int(first_key(vision, "patch_size", default=defaults["patch"])),
        # kimi_k25_vit.py::_get_pos_emb_size: init_pos_emb_* (legacy checkpoints, K3), else pos_emb_*
        "positions": int(first_key(vision, "init_pos_emb_height", "pos_emb_height", default=defaults["pos"]))
        * int(first_key(vision, "init_pos_emb_width", "pos_emb_width", default=defaults["pos"])),
    }


def _kimi_vl(vision: dict[str, Any]) -> _MoonViT:
    """moonvit.py's MoonVitPretrainedModel: biased LayerNorm blocks whatever the config says."""
    sizes = _sizes(vision, k3=False)
    return _MoonViT(
        **sizes,
        qkv=sizes["hidden"],
        merge=_merge(vision),
        layernorm=True,
        attn_bias=True,
        linear_bias=True,
        patch_bias=True,
        projector_v2=False,
    )


def _moonvit_3d(vision: dict[str, Any], k3: bool) -> _MoonViT:
    """kimi_k25_vit.py's MoonViT3dPretrainedModel, each switch read with the config class's default."""
    sizes = _sizes(vision, k3)

    def switch(key: str, k25_default: Any, k3_default: Any) -> Any:
        return first_key(vision, key, default=k3_default if k3 else k25_default)

    return _MoonViT(
        **sizes,
        qkv=int(switch("qkv_hidden_size", sizes["hidden"], 1536)),
        merge=_merge(vision),
        layernorm=switch("norm_type", "layernorm", "rmsnorm") == "layernorm",
        attn_bias=bool(switch("attn_bias", True, False)),
        linear_bias=bool(switch("linear_bias", True, False)),
        patch_bias=bool(switch("patch_embed_proj_bias", True, False)),
        projector_v2=switch("mm_projector_type", "patchmerger", "patchmergerv2") == "patchmergerv2",
    )


def _shapes(tower: _MoonViT, text_hidden: int) -> Shapes:
    """The tower's patch convolution, position grid and blocks (fused wqkv, wo, fc0, fc1, two norms), its final
    norm, and the projector's two linears from the merged patches into the text width."""
    h, layers, inner, qkv = tower.hidden, tower.layers, tower.inner, tower.qkv
    merged = h * tower.merge
    shapes = [
        LinearShape("vision.patch_embedding", "vision", 3 * tower.patch * tower.patch, h, 1),
        LinearShape("vision.attn.wqkv", "vision", h, 3 * qkv, layers),
        LinearShape("vision.attn.wo", "vision", qkv, h, layers),
        LinearShape("vision.mlp.fc0", "vision", h, inner, layers),
        LinearShape("vision.mlp.fc1", "vision", inner, h, layers),
        LinearShape("multi_modal_projector.linear_1", "vision", merged, merged, 1),
        LinearShape("multi_modal_projector.linear_2", "vision", merged, text_hidden, 1),
    ]
    norm = 2 * h if tower.layernorm else h
    block = 2 * norm + (3 * qkv + h if tower.attn_bias else 0) + (inner + h if tower.linear_bias else 0)
    vectors = (h if tower.patch_bias else 0) + tower.positions * h + layers * block + norm
    vectors += text_hidden if tower.projector_v2 else 2 * h + merged + text_hidden
    return shapes, vectors


def kimi_vl_shapes(config: dict[str, Any], text_hidden: int) -> Shapes:
    """Kimi-VL (``kimi_vl``): the MoonViT and KimiVLMultiModalProjector, both built without quant_config."""
    return _shapes(_kimi_vl(config.get("vision_config") or {}), text_hidden)


def moonvit_3d_shapes(config: dict[str, Any], text_hidden: int) -> Shapes:
    """Kimi-K2.5 and K2.6 (``kimi_k25``) and Kimi K3 (``kimi_k3``): MoonViT3d and KimiK25MultiModalProjector."""
    vision = config.get("vision_config") or {}
    return _shapes(_moonvit_3d(vision, k3=config.get("model_type") == "kimi_k3"), text_hidden)
