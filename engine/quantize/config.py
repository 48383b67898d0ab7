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
    block_structure: list[int] | None = None,
    scale_dtype: str | None = None,
) -> dict[str, Any]:
    """One QuantizationArgs, serialized with every field as compressed-tensors dumps it (``mode="json"``)."""
    return {
        "num_bits": num_bits,
        "type": kind,
        "symmetric": True,
        "group_size": group_size,
        "strategy": strategy,
        "block_structure": block_structure,
        "dynamic": dynamic,
        "actorder": None,
        "scale_dtype": scale_dtype,
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
        writes for the matching preset (``scheme.preset``: ``FP8_DYNAMIC``, ``FP8_BLOCK``, ``W8A8``,
        ``W8A16``, ``W4A16``, ``NVFP4A16``).
    """
    weight_type = "int" if scheme.kind == "int" else "float"
    if scheme.block is not None:
        weights = _args(scheme.num_bits, weight_type, "block", block_structure=list(scheme.block))
    elif scheme.kind == "fp4":
        weights = _args(
            scheme.num_bits,
            weight_type,
            "tensor_group",
            group_size=scheme.group_size,
            scale_dtype="torch.float8_e4m3fn",
        )
    elif scheme.group_size is not None:
        weights = _args(scheme.num_bits, weight_type, "group", group_size=scheme.group_size)
    else:
        weights = _args(scheme.num_bits, weight_type, "channel")
    activations = None
    if scheme.quantizes_activations and scheme.activation_group_size is not None:
        activations = _args(8, weight_type, "group", group_size=scheme.activation_group_size, dynamic=True)
    elif scheme.quantizes_activations:
        activations = _args(8, weight_type, "token", dynamic=True)
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
