"""Gemma 3n's decoder parts no other family has, as vLLM 0.32's gemma3n.py builds them: AltUp and LAuReL."""

from __future__ import annotations

from engine.model.architecture import Architecture
from engine.model.config_class_defaults import GEMMA3N_TEXT_MODEL_TYPES
from engine.model.linear_shape import LinearShape

# transformers' Gemma3nTextConfig defaults, for a config.json that leaves them out.
_ALTUP_INPUTS, _LAUREL_RANK = 4, 64


def _altup_inputs(arch: Architecture) -> int:
    return int(arch.text.get("altup_num_inputs") or _ALTUP_INPUTS)


def altup_laurel_layer_shapes(arch: Architecture, layers: int) -> tuple[list[LinearShape], int]:
    """``layers`` decoder layers' AltUp and LAuReL blocks: (matrices, vector parameters).

    Gemma3nAltUp: correction_coefs n → n, prediction_coefs n → n², modality_router h → n (ReplicatedLinear, the
    router's part: they weigh the n AltUp streams), router_norm and correct_output_scale (h each).
    Gemma3nLaurelBlock: linear_left h → rank, linear_right rank → h, post_laurel_norm (h). Nothing for another
    family.
    """
    if arch.model_type not in GEMMA3N_TEXT_MODEL_TYPES or not layers:
        return [], 0
    n, h = _altup_inputs(arch), arch.hidden_size
    rank = int(arch.text.get("laurel_rank") or _LAUREL_RANK)
    shapes = [
        LinearShape("altup.correction_coefs", "router", n, n, layers),
        LinearShape("altup.prediction_coefs", "router", n, n * n, layers),
        LinearShape("altup.modality_router", "router", h, n, layers),
        LinearShape("laurel.linear_left", "mlp", h, rank, layers),
        LinearShape("laurel.linear_right", "mlp", rank, h, layers),
    ]
    return shapes, layers * 3 * h


def altup_projection_shapes(arch: Architecture) -> list[LinearShape]:
    """The model's AltUp stream projections: altup_projections and altup_unembed_projections, n - 1 of h → h each
    (Gemma3nSelfDecoder, Gemma3nTextModel). None for another family."""
    if arch.model_type not in GEMMA3N_TEXT_MODEL_TYPES:
        return []
    streams, h = _altup_inputs(arch) - 1, arch.hidden_size
    return [
        LinearShape("altup_projections", "mlp", h, h, streams),
        LinearShape("altup_unembed_projections", "mlp", h, h, streams),
    ]
