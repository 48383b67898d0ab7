"""One shape of weight matrix in a model (module, role, size, how many), the unit every parameter count adds up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# "unquantized": a decoder Linear vLLM builds without the quantization config (Jamba's MambaMixer).
Part = Literal[
    "attention",
    "linear_attention",
    "mlp",
    "experts",
    "shared_expert",
    "router",
    "unquantized",
    "vision",
    "lm_head",
]
# Parts a weight quantizer targets in the decoder (routers, vision towers and lm_head usually stay 16-bit).
DECODER_LINEAR_PARTS: tuple[Part, ...] = ("attention", "linear_attention", "mlp", "experts", "shared_expert")


@dataclass(frozen=True, slots=True)
class LinearShape:
    """``count`` weight matrices of one shape (one per layer, or per layer and expert).

    Attributes:
        module: the module's name inside a decoder layer (or the tower), e.g. ``self_attn.q_proj``.
        part: what it belongs to, which decides whether a checkpoint format quantizes it.
    """

    module: str
    part: Part
    in_features: int
    out_features: int
    count: int

    @property
    def numel(self) -> int:
        """Weights over all ``count`` matrices."""
        return self.in_features * self.out_features * self.count
