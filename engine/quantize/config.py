"""Builds the ``quantization_config`` block compressed-tensors writes and vLLM reads, for the data-free schemes."""

from __future__ import annotations

from typing import Any

from engine.quantize.schemes import Scheme

# The compressed-tensors release whose format this writer reproduces (checked by the tests).
COMPRESSED_TENSORS_VERSION = "0.17.0"


def _args(
    num_bits: int,
    kind: str,
    strategy: str,
    *,
    group_size: int | None = None,
    dynamic: bool = False,
) -> dict[str, Any]:
    """One QuantizationArgs, serialized with every field as compressed-tensors dumps it."""
    return {
        "num_bits": num_bits,
        "type": kind,
        "symmetric": True,
        "group_size": group_size,
        "strategy": strategy,
        "block_structure": None,
        "dynamic": dynamic,
        "actorder": None,
        "scale_dtype": None,
        "zp_dtype": None,
        # Static weights default to the memoryless min-max observer; dynamic activations have none.
        "observer": None if dynamic else "memoryless_minmax",
        "observer_kwargs": {},
    }


def quantization_config(scheme: Scheme, ignore: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The ``quantization_config`` for a checkpoint written with ``scheme``.

    Args:
        scheme: the data-free scheme the Linear weights were quantized with.
        ignore: module names of Linear layers left in 16-bit (lm_head, routers, user choices).

    Returns:
        A JSON-ready dict equal to what compressed-tensors' ``ModelCompressor.update_config``
        writes for the matching preset (``FP8_DYNAMIC``, ``W8A8``, ``W4A16``).
    """
    strategy = "group" if scheme.group_size is not None else "channel"
    weights = _args(scheme.num_bits, scheme.kind, strategy, group_size=scheme.group_size)
    activations = _args(8, scheme.kind, "token", dynamic=True) if scheme.quantizes_activations else None
    return {
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": weights,
                "input_activations": activations,
                "output_activations": None,
                "format": scheme.format,
            }
        },
        "format": scheme.format,
        "global_compression_ratio": None,
        "ignore": list(ignore),
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": COMPRESSED_TENSORS_VERSION,
    }


def quantized_model_config(
    source_config: dict[str, Any], scheme: Scheme, ignore: list[str] | tuple[str, ...]
) -> dict[str, Any]:
    """The output ``config.json``: the source's, with ``quantization_config`` added."""
    return {**source_config, "quantization_config": quantization_config(scheme, ignore)}
