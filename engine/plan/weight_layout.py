"""How a quantization method stores the Linear layers' weights once vLLM has loaded them (the registry's sizes)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WeightLayout:
    """How a method stores the Linear layers' weights once vLLM has loaded them.

    Attributes:
        bits: bits per quantized weight (an average for GGUF's mixed types).
        group_size: weights sharing one scale; None means one scale per output row.
        scale_bytes: bytes per scale as vLLM keeps it in memory.
        zero_point_bytes: bytes per group for asymmetric formats (0 when symmetric).
        quantizes_embeddings: whether embeddings and lm_head are quantized too (GGUF).
        quantizes_activations: whether the matmuls take low-precision activations (W8A8/W4A4).
        embedding_bits: bits per weight of ``embed_tokens`` when quantized (GGUF).
        lm_head_bits: bits per weight of the lm_head when quantized (GGUF; a tied model's one matrix).
    """

    bits: float
    group_size: int | None
    scale_bytes: float
    zero_point_bytes: float = 0.0
    quantizes_embeddings: bool = False
    quantizes_activations: bool = False
    embedding_bits: float | None = None
    lm_head_bits: float | None = None

    @property
    def vocab_bits(self) -> tuple[float, float] | None:
        """(embed_tokens, lm_head) bits per weight when the method keeps them quantized, else None."""
        if not self.quantizes_embeddings or self.embedding_bits is None or self.lm_head_bits is None:
            return None
        return self.embedding_bits, self.lm_head_bits
