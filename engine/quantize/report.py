"""Per-layer reconstruction error, quality figures, and the README.md model card written next to the weights."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from engine.quantize.request import LayerError, QuantizeReport
from engine.units import format_bytes

if TYPE_CHECKING:
    from engine.bench.quality import QualityComparison

WORST_LAYERS_SHOWN = 5
_QUALITY_SECTION = re.compile(r"## Quality\n.*?(?=\n## |\Z)", re.DOTALL)


def layer_error(name: str, weight_square_sum: float, error_square_sum: float) -> LayerError:
    """The relative error and SNR of a layer from the sums of squares of its weight and its error."""
    if weight_square_sum <= 0.0:
        relative = 0.0 if error_square_sum <= 0.0 else math.inf
    else:
        relative = math.sqrt(error_square_sum / weight_square_sum)
    snr_db = math.inf if relative == 0.0 else -20.0 * math.log10(relative)
    return LayerError(name, relative, snr_db)


def worst_first(errors: list[LayerError]) -> tuple[LayerError, ...]:
    """Layer errors sorted by relative error, highest first (name breaks ties)."""
    return tuple(sorted(errors, key=lambda error: (-error.relative_error, error.name)))


def error_summary(errors: tuple[LayerError, ...]) -> str:
    """One line: median relative error and SNR, and the worst layer."""
    if not errors:
        return "no per-layer error measured"
    ordered = sorted(error.relative_error for error in errors)
    median = ordered[len(ordered) // 2]
    worst = errors[0]
    median_snr = math.inf if median == 0 else -20 * math.log10(median)
    return (
        f"median relative error {median:.4f} ({median_snr:.1f} dB SNR); "
        f"worst {worst.name} {worst.relative_error:.4f} ({worst.snr_db:.1f} dB)"
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _quality_markdown(quality: QualityComparison | None) -> str:
    if quality is None:
        return (
            "## Quality\n\nNot measured yet. The perplexity and next-token agreement against the original "
            "model, measured through vLLM, are added here when the quality check runs.\n"
        )
    return (
        "## Quality\n\nMeasured through vLLM on held-out text "
        f"({quality.positions} token positions), original vs this checkpoint:\n\n"
        "| perplexity (original) | perplexity (quantized) | change | top-1 next-token agreement |\n"
        "|---:|---:|---:|---:|\n"
        f"| {quality.baseline_perplexity:.3f} | {quality.candidate_perplexity:.3f} | "
        f"{(quality.perplexity_ratio - 1) * 100:+.2f} % | {quality.top1_agreement_percent:.1f} % |\n"
    )


def model_card(
    report: QuantizeReport,
    scheme_description: str,
    quantization_format: str,
    unquantized: tuple[str, ...],
    quality: QualityComparison | None = None,
) -> str:
    """The README.md of a quantized model: method, source, scheme, sizes, layer errors, quality."""
    lines = [
        "---",
        "library_name: vllm",
        "tags:",
        "- compressed-tensors",
        f"- {report.method}",
        "- quant-tui",
        "---",
        "",
        f"# {report.output.name}",
        "",
        f"`{report.source.name}` quantized with quant-tui, method **{report.method}**: {scheme_description}.",
        "",
        "| | |",
        "|---|---|",
        f"| Source | `{report.source}` |",
        f"| Format | compressed-tensors `{quantization_format}` (loads directly in vLLM) |",
        f"| Layers quantized | {report.tensors_quantized} Linear weights |",
        f"| Left in 16-bit | {', '.join(f'`{name}`' for name in unquantized) or 'nothing'} |",
        f"| Size | {format_bytes(report.input_bytes)} → {format_bytes(report.output_bytes)} "
        f"({report.ratio:.2f}× smaller) |",
        f"| Time | {report.seconds:.1f} s, peak memory {format_bytes(report.peak_rss_bytes)} |",
    ]
    serve = f"vllm serve {report.output}"
    if report.kv_cache_scheme is not None:
        lines.append(
            f"| KV cache | {report.kv_cache_scheme.upper()} with per-layer key and value scales measured on "
            "the calibration text |"
        )
        serve += f" --kv-cache-dtype {report.kv_cache_scheme}"
    lines += [
        "",
        "## Weight reconstruction error",
        "",
    ]
    if report.layer_errors:
        lines += [
            _sentence(error_summary(report.layer_errors)),
            "",
            "| worst layers | relative error | SNR |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| `{error.name}` | {error.relative_error:.4f} | {error.snr_db:.1f} dB |"
            for error in report.layer_errors[:WORST_LAYERS_SHOWN]
        ]
    else:
        lines.append("Not measured for this method.")
    lines += [
        "",
        _quality_markdown(quality),
        "## Serving",
        "",
        "```",
        serve,
        "```",
        "",
    ]
    return "\n".join(lines)


def update_quality(folder: Path, quality: QualityComparison) -> bool:
    """Fills in the Quality section of a model card written by ``model_card``.

    Returns False and leaves the folder alone when it has no card with that section (a checkpoint
    quant-tui did not make keeps its own README).
    """
    card = folder / "README.md"
    try:
        text = card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    section = _quality_markdown(quality).rstrip("\n")
    updated, count = _QUALITY_SECTION.subn(lambda _: section, text, count=1)
    if not count:
        return False
    staging = card.with_name(f".{card.name}.partial-{os.getpid()}")
    try:
        staging.write_text(updated, encoding="utf-8")
        staging.replace(card)
    except OSError:
        staging.unlink(missing_ok=True)
        raise
    return True
