"""The method registry: one frozen record per quantization method, the one definition every method table derives from.

Adding a method is one record in ``METHODS`` (and its name in ``method_record.MethodName``); the planner's
capability checks, weight sizes, trade-off notes, the quantizer's folder names and scheme
presets and the app's method lists all read from here. ``tests/plan/test_methods.py`` checks that
the two agree and that every record is consistent.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import get_args

from engine.plan import vllm_facts
from engine.plan.calibrated_method import MethodTime
from engine.plan.method_record import Method, MethodName, Producer
from engine.plan.weight_layout import WeightLayout

METHODS: tuple[Method, ...] = (
    Method(
        name="bf16",
        label="BF16 (unquantized)",
        weights=WeightLayout(16, None, 0),
        capability=vllm_facts.UNQUANTIZED,
        producer="baseline",
        folder_suffix=None,
        trade_off="no loss (the baseline)",
        ct_scheme=None,
        description="the original 16-bit weights",
    ),
    Method(
        name="fp8",
        label="FP8 W8A8",
        # compressed-tensors' per-channel FP8/INT8 scales are loaded as float32.
        weights=WeightLayout(8, None, 4, quantizes_activations=True),
        capability=vllm_facts.CT_FP8,
        producer="data-free",
        folder_suffix="FP8-Dynamic",
        trade_off="near-lossless (perplexity +<0.1 typical)",
        ct_scheme="FP8_DYNAMIC",
        description="FP8 E4M3 weights with one scale per output channel; activations FP8, dynamic per token",
    ),
    Method(
        name="fp8-block",
        label="FP8 W8A8 (128x128 blocks)",
        # One float32 scale per 128x128 weight block (DeepSeek-V3's layout).
        weights=WeightLayout(8, None, 4, quantizes_activations=True),
        capability=vllm_facts.CT_FP8,
        producer="data-free",
        folder_suffix="FP8-BLOCK",
        trade_off="near-lossless (perplexity +<0.1 typical)",
        ct_scheme="FP8_BLOCK",
        description=(
            "FP8 E4M3 weights with one scale per 128x128 block; activations FP8, dynamic per token and 128 inputs"
        ),
    ),
    Method(
        name="fp8-w8a16",
        label="FP8 weight-only (W8A16)",
        # Marlin keeps a model-dtype scale per output channel (marlin_utils_fp8.prepare_fp8_layer_for_marlin).
        weights=WeightLayout(8, None, 2),
        capability=vllm_facts.CT_FP8_W8A16,
        producer="pre-quantized",
        folder_suffix=None,
        trade_off="near-lossless (8-bit float weights, 16-bit math)",
        ct_scheme=None,
        description="FP8 E4M3 weights with one scale per output channel (or tensor, or block); activations 16-bit",
        not_made_here="quant-tui makes FP8 as W8A8 (`--method fp8`); serve a published FP8 weight-only checkpoint",
    ),
    Method(
        name="modelopt-fp8",
        label="FP8 W8A8 (ModelOpt)",
        # float32 weight scales per tensor (FP8), per output channel (FP8_PER_CHANNEL_PER_TOKEN) or per
        # 128x128 block (FP8_PB_WO): one a row bounds them all.
        weights=WeightLayout(8, None, 4, quantizes_activations=True),
        capability=vllm_facts.MODELOPT_FP8,
        producer="pre-quantized",
        folder_suffix=None,
        trade_off="near-lossless (perplexity +<0.1 typical)",
        ct_scheme=None,
        description="FP8 E4M3 weights with NVIDIA ModelOpt's scales (per tensor, channel or 128x128 block); activations FP8",
        not_made_here="quant-tui makes FP8 as compressed-tensors (`--method fp8`); serve a checkpoint NVIDIA ModelOpt exported",
    ),
    Method(
        name="modelopt-mxfp8",
        label="MXFP8 (ModelOpt)",
        # An E8M0 (1-byte) scale per 32 weights.
        weights=WeightLayout(8, 32, 1, quantizes_activations=True),
        capability=vllm_facts.MODELOPT_MXFP8,
        producer="pre-quantized",
        folder_suffix=None,
        trade_off="near-lossless (8-bit float weights with fine-grained scales)",
        ct_scheme=None,
        description="MXFP8 (FP8 E4M3) weights with one E8M0 scale per 32 inputs; activations MXFP8 at run time",
        not_made_here="quant-tui does not write MXFP8; serve a checkpoint NVIDIA ModelOpt exported",
    ),
    Method(
        name="modelopt-mixed",
        label="Mixed precision (ModelOpt)",
        # Sized per layer from the checkpoint (engine/model/checkpoint_size.py); FP8 as the typical layer.
        weights=WeightLayout(8, None, 4, quantizes_activations=True),
        capability=vllm_facts.MODELOPT_MIXED,
        producer="pre-quantized",
        folder_suffix=None,
        trade_off="depends on the per-layer mix (FP8 near-lossless, NVFP4 small loss)",
        ct_scheme=None,
        description="each layer in its own ModelOpt format (FP8, NVFP4 or MXFP8), listed in quantized_layers",
        not_made_here="quant-tui does not write mixed-precision checkpoints; serve one NVIDIA ModelOpt exported",
    ),
    Method(
        name="int8-w8a8",
        label="INT8 W8A8",
        weights=WeightLayout(8, None, 4, quantizes_activations=True),
        capability=vllm_facts.CT_INT8_W8A8,
        producer="data-free",
        folder_suffix="W8A8-INT8",
        trade_off="near-lossless with per-channel scales (perplexity +<0.1 typical)",
        ct_scheme="W8A8",
        description="INT8 symmetric weights with one scale per output channel; activations INT8, dynamic per token",
    ),
    Method(
        name="w8a16",
        label="INT8 weight-only (W8A16)",
        weights=WeightLayout(8, 128, 2),
        capability=vllm_facts.CT_WNA16_INT8,
        producer="data-free",
        folder_suffix="W8A16",
        trade_off="near-lossless (8-bit weights, 16-bit math)",
        ct_scheme="W8A16",
        description="INT8 symmetric weights, one scale per 128 inputs, round-to-nearest; activations 16-bit",
    ),
    Method(
        name="w4a16",
        label="INT4 weight-only (W4A16)",
        weights=WeightLayout(4, 128, 2),
        capability=vllm_facts.CT_WNA16,
        producer="data-free",
        folder_suffix="W4A16",
        trade_off="small loss (perplexity +0.1-0.3 typical with GPTQ/AWQ; more with round-to-nearest)",
        ct_scheme="W4A16",
        description="INT4 symmetric weights, one scale per 128 inputs, round-to-nearest; activations 16-bit",
        cpu_avx512_only=True,
    ),
    Method(
        name="gptq-w4a16",
        label="INT4 GPTQ (W4A16)",
        weights=WeightLayout(4, 128, 2),
        capability=vllm_facts.CT_WNA16,
        producer="llm-compressor",
        folder_suffix="W4A16-GPTQ",
        trade_off="small loss (perplexity +0.1-0.3 typical)",
        ct_scheme="W4A16",
        description="INT4 symmetric weights, group 128, GPTQ on calibration text (llm-compressor); activations 16-bit",
        cpu_avx512_only=True,
        serves_as="w4a16",
        calibration="gptq",
        # The calibration_time constants, fitted by method to the quicker of two runs (another job on
        # the 2 cores slowed single runs 1.5-3x: gptq-w4a16 calibrated the Llama in 88.6 s, then 31.8 s):
        # calibrating 1.0 / 19.5 s (gptq-w8a16), 1.0 / 35.4 (smoothquant-int8), 4.7 / 31.8 (gptq-w4a16),
        # 7.5 / 51.8 (awq-w4a16), 0.3 / 1.0 (nvfp4) and saving 6.0 / 9.2, 1.1 / 2.0, 6.9 / 15.4, 1.2 / 2.4,
        # 1.4 / 4.2 s on the demo model / the 0.44 GB Llama (engine/quantize/calibrated_cost.py's docstring).
        calibration_time=MethodTime(1.13, 1.0, 1.09e-10, 6.6, 1.0e-7),
    ),
    Method(
        name="awq-w4a16",
        label="INT4 AWQ (W4A16, asymmetric)",
        # One packed 4-bit zero point per group.
        weights=WeightLayout(4, 128, 2, zero_point_bytes=0.5),
        capability=vllm_facts.CT_WNA16,
        producer="llm-compressor",
        folder_suffix="W4A16-AWQ",
        trade_off="small loss (perplexity +0.1-0.3 typical)",
        ct_scheme="W4A16_ASYM",
        description="INT4 asymmetric weights, group 128, AWQ scaling on calibration text (llm-compressor); activations 16-bit",
        cpu_avx512_only=True,
        serves_as="w4a16",
        calibration="awq",
        # Least relative error over three runs, calibrating 7.5 s (demo), 44.9-51.8 s (0.44 GB Llama,
        # 2 layers, 592 tokens) and 78.7 s (0.70 GB, 5 layers, 1237 tokens): the 0.44 GB model's layers
        # cost 22 s each against 16 s for the 0.70 GB model's with twice the tokens, which no per-layer
        # + per-token form fits; it reads 0.4-0.5 x there, about 1.0 and 1.2 x on the others.
        calibration_time=MethodTime(1.78, 18.7, 0.0, 1.2, 1.4e-8),
    ),
    Method(
        name="gptq-w8a16",
        label="INT8 GPTQ (W8A16)",
        weights=WeightLayout(8, 128, 2),
        capability=vllm_facts.CT_WNA16_INT8,
        producer="llm-compressor",
        folder_suffix="W8A16-GPTQ",
        trade_off="near-lossless (8-bit weights, 16-bit math)",
        ct_scheme="W8A16",
        description="INT8 symmetric weights, group 128, GPTQ on calibration text (llm-compressor); activations 16-bit",
        serves_as="w8a16",
        calibration="gptq",
        calibration_time=MethodTime(0.22, 1.0, 6.9e-11, 5.9, 3.8e-8),
    ),
    Method(
        name="smoothquant-int8",
        label="INT8 W8A8 (SmoothQuant + GPTQ)",
        weights=WeightLayout(8, None, 4, quantizes_activations=True),
        capability=vllm_facts.CT_INT8_W8A8,
        producer="llm-compressor",
        folder_suffix="W8A8-INT8-SmoothQuant",
        trade_off="near-lossless; SmoothQuant keeps activation outliers from costing accuracy",
        ct_scheme="W8A8",
        description=(
            "INT8 weights per output channel after SmoothQuant (strength 0.8), GPTQ on calibration text "
            "(llm-compressor); activations INT8, dynamic per token"
        ),
        serves_as="int8-w8a8",
        calibration="smoothquant-gptq",
        calibration_time=MethodTime(0.20, 1.0, 1.3e-10, 1.1, 1.1e-8),
    ),
    Method(
        name="nvfp4",
        label="NVFP4 (W4A4)",
        # An FP8 scale per 16 weights.
        weights=WeightLayout(4, 16, 1, quantizes_activations=True),
        capability=vllm_facts.CT_NVFP4,
        producer="llm-compressor",
        folder_suffix="NVFP4",
        trade_off="small loss (4-bit float with fine-grained scales)",
        ct_scheme="NVFP4",
        description=(
            "NVFP4 (FP4 E2M1) weights, one FP8 scale per 16 inputs and one FP32 global scale; activations FP4 "
            "per 16 at run time under a per-layer global scale calibrated on sample text (llm-compressor)"
        ),
        calibration="observers",
        calibration_time=MethodTime(0.07, 1.0, 0.0, 1.3, 3.3e-8),
    ),
    Method(
        name="nvfp4a16",
        label="NVFP4 weight-only (W4A16)",
        # An FP8 scale per 16 weights, plus one FP32 global scale per weight.
        weights=WeightLayout(4, 16, 1),
        capability=vllm_facts.CT_NVFP4A16,
        producer="data-free",
        folder_suffix="NVFP4A16",
        trade_off="small loss (4-bit float with fine-grained scales, round-to-nearest)",
        ct_scheme="NVFP4A16",
        description=(
            "NVFP4 (FP4 E2M1) weights, one FP8 scale per 16 inputs and one FP32 global scale; activations 16-bit"
        ),
    ),
    Method(
        name="mxfp4",
        label="MXFP4",
        # An E8M0 scale per 32 weights.
        weights=WeightLayout(4, 32, 1),
        capability=vllm_facts.MXFP4,
        producer="pre-quantized",
        folder_suffix="MXFP4",
        trade_off="loss varies by model (4-bit float, coarse E8M0 scales)",
        ct_scheme="MXFP4A16",
        not_made_here="quant-tui does not write MXFP4; serve a checkpoint published in it (gpt-oss ships MXFP4)",
    ),
    Method(
        name="bnb-4bit",
        label="bitsandbytes NF4",
        # An fp32 absmax per 64 weights, no double quantization.
        weights=WeightLayout(4, 64, 4),
        capability=vllm_facts.PLUGIN_WEIGHT_ONLY,
        producer="other-runtime",
        folder_suffix=None,
        trade_off="small-to-moderate loss (perplexity +0.2-0.5 typical)",
        ct_scheme=None,
        plugin="bitsandbytes",
        not_made_here="bitsandbytes quantizes at load time in its own runtime, through the bitsandbytes vLLM plugin",
    ),
    Method(
        name="bnb-8bit",
        label="bitsandbytes INT8",
        weights=WeightLayout(8, None, 4),
        capability=vllm_facts.PLUGIN_WEIGHT_ONLY,
        producer="other-runtime",
        folder_suffix=None,
        trade_off="near-lossless",
        ct_scheme=None,
        plugin="bitsandbytes",
        not_made_here="bitsandbytes quantizes at load time in its own runtime, through the bitsandbytes vLLM plugin",
    ),
    Method(
        name="gguf",
        label="GGUF Q4_K_M",
        # Q4_K_M averages about 4.85 bits per weight; llama.cpp keeps token_embd in Q4_K (144 B per 256
        # weights) and output in Q6_K (210 B per 256), a tied token_embd in Q6_K.
        weights=WeightLayout(
            4.85, None, 0, quantizes_embeddings=True, embedding_bits=4.5, lm_head_bits=6.5625
        ),
        capability=vllm_facts.PLUGIN_WEIGHT_ONLY,
        producer="other-runtime",
        folder_suffix=None,
        trade_off="depends on the GGUF type; Q4_K_M is a moderate loss",
        ct_scheme=None,
        plugin="GGUF",
        not_made_here="GGUF files are made by llama.cpp's tools and served through the GGUF vLLM plugin",
    ),
)

BY_NAME: MappingProxyType[str, Method] = MappingProxyType({m.name: m for m in METHODS})
METHOD_NAMES: tuple[MethodName, ...] = get_args(MethodName)


def method(name: str) -> Method:
    """The record for ``name``.

    Raises:
        KeyError: no such method (callers that take user input check ``is_method`` first).
    """
    return BY_NAME[name]


def is_method(name: str) -> bool:
    """Whether ``name`` is a registered method."""
    return name in BY_NAME


def names(*producers: Producer) -> tuple[MethodName, ...]:
    """Registered method names, in registry order; only those made by ``producers`` when given."""
    return tuple(m.name for m in METHODS if not producers or m.producer in producers)


def quantizable() -> tuple[MethodName, ...]:
    """The methods ``quant-tui quantize`` makes: data-free ones first, then the calibrated ones."""
    return names("data-free") + names("llm-compressor")


def default_output_dir(source: Path, method_name: str) -> Path:
    """The folder a run writes to when none is named: next to the source, named after it and the method.

    A model inside the Hugging Face cache (``.../models--org--name/snapshots/<rev>``) is written to
    quant-tui's cache folder instead, as ``quantized/<name>-<suffix>``, so nothing lands in the hub cache.

    Raises:
        ValueError: ``method_name`` is not a method quant-tui quantizes.
    """
    if method_name not in quantizable():
        raise ValueError(f"unknown method {method_name!r}; choose one of {', '.join(quantizable())}")
    suffix = method(method_name).folder_suffix or method_name.upper()
    source = Path(source).expanduser().absolute()
    parts = source.parts
    if "snapshots" in parts and parts[parts.index("snapshots") - 1].startswith("models--"):
        from engine.paths import cache_dir

        repo_folder = parts[parts.index("snapshots") - 1]
        name = repo_folder.removeprefix("models--").split("--", 1)[-1]
        return cache_dir() / "quantized" / f"{name}-{suffix}"
    return source.parent / f"{source.name}-{suffix}"
