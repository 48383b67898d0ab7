"""The plan's "make it" line and folder: the exact `quant-tui quantize` command for a method (or why not), and where it lands."""

from __future__ import annotations

from pathlib import Path

from engine.model.inspect_model import ModelInfo
from engine.plan.methods import METHODS, MethodName, default_output_dir, method


def _kv_scales_option(kv_cache_dtype: str) -> str:
    """The calibrated commands' option that measures KV scales, where the plan runs an FP8 KV cache."""
    return " --kv-cache-scheme fp8" if kv_cache_dtype.startswith("fp8") else ""


def make_command(name: str, model: str, kv_cache_dtype: str = "auto") -> str | None:
    """The exact ``quant-tui quantize`` command that makes ``name``'s checkpoint from ``model``.

    A method made by a calibrated recipe too (``w4a16`` by ``gptq-w4a16``) gets the data-free
    command; ``calibrated_alternatives`` names the others. With an FP8 KV cache planned, a calibrated
    command adds ``--kv-cache-scheme fp8`` (measured KV scales). None when quant-tui does not make it
    (the record's ``not_made_here`` says why) or when nothing is to be made (the baseline).
    """
    record = method(name)
    if record.producer == "data-free":
        return f"quant-tui quantize --model {model} --method {name}"
    if record.producer == "llm-compressor":
        return f"quant-tui quantize --model {model} --method {name} --calibration FILE{_kv_scales_option(kv_cache_dtype)}"
    return None


def calibrated_alternatives(name: str) -> tuple[MethodName, ...]:
    """The calibrated methods whose checkpoints are served as ``name`` (``int8-w8a8``: ``smoothquant-int8``)."""
    return tuple(m.name for m in METHODS if m.serves_as == name and m.producer == "llm-compressor")


def make_it_line(name: str, model: str, kv_cache_dtype: str = "auto", refusal: str | None = None) -> str:
    """The plan's "make it" sentence for ``name``: the exact command(s), or why quant-tui does not make it.

    ``refusal`` is why ``quant-tui quantize`` refuses this model (``quantize_refusal``). A data-free
    checkpoint runs an FP8 KV cache with scales of 1.0, which the line says.
    """
    if refusal is not None:
        return f"quant-tui cannot make this checkpoint ({refusal}): make it with llm-compressor, or serve a published one"
    command = make_command(name, model, kv_cache_dtype)
    if command is None:
        return method(name).not_made_here or f"{method(name).label} is not made by quant-tui"
    kv = _kv_scales_option(kv_cache_dtype)
    line = f"make the checkpoint with `{command}`"
    alternatives = calibrated_alternatives(name)
    if alternatives:
        better = ", ".join(f"`--method {other} --calibration FILE{kv}`" for other in alternatives)
        line += f" (calibrated on sample text, usually more accurate: {better})"
    if kv and method(name).producer == "data-free":
        line += (
            "; its FP8 KV cache runs with scales of 1.0: a calibrated method with `--kv-cache-scheme fp8` "
            "measures them"
        )
    return line


def quantized_dir(model: ModelInfo, name: str) -> Path:
    """Where the checkpoint for method ``name`` lands: `quant-tui quantize`'s own default for what it makes."""
    if method(name).producer == "data-free":
        return default_output_dir(model.path, name)
    return model.path.parent / f"{model.name}-{name.upper()}"
