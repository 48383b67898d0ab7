"""The memory and time model of a calibrated (llm-compressor) run, fitted to benchmarks/bench_quantize_estimates.py.

Memory: the higher of two phases.

- Calibrating: this process, measured (it stays resident while it waits for the worker, so the two
  add up) + the worker before the model (python with torch, transformers, datasets and
  llm-compressor imported) + the whole model in its dtype x ``MODEL_COPIES`` + one decoder layer's
  GPTQ Hessians (``in_features**2`` float32 per Linear) + the calibration activations entering and
  leaving that layer (``samples * seq_len * hidden`` twice, every sample counted at the full
  sequence length: an upper bound).
- Checking (plain GPTQ only, after the worker has exited): this process with torch and
  compressed-tensors imported to dequantize each packed layer, plus the largest weight in float32
  three times (original, restored, difference).

Time: ``STARTUP_SECONDS`` (worker start, imports) + the model's load at ``MODEL_LOAD_BYTES_PER_S``
+ per method (the constants of its registry record's ``calibration_time``, in ``engine.plan.methods``)
``layers * layer_seconds`` + ``linear_params * tokens * FORWARD_SECONDS * token_passes``
(the calibration tokens through every Linear: calibrate, then propagate the quantized layer; AWQ's
scale search runs them some 19 times over) + ``solve_flops * solve_seconds_per_flop`` (GPTQ's
column-by-column solve, ``rows * in_features**2`` per Linear, whatever the tokens) +
``finish_seconds + linear_params * finish_seconds_per_param`` (compressing on save, and for plain
GPTQ the layer-error check). ``tokens`` are the calibration samples' real token counts (cut at the
sequence length), not samples x sequence length: the demo corpus's paragraphs are about 100 tokens.
On the demo model the fixed terms are nearly all of it (start-up 3.4-4.3 s of 5-16 s); on large
models the token passes (and GPTQ's solve) are.

Fitted on a 2-core AMD EPYC, llm-compressor 0.14, torch 2.13 CPU, 8 demo-corpus samples (592
tokens), the demo model (4 layers of 256/768) and a 0.44 GB built Llama (2 TinyLlama layers,
2048/5632); each method's two constants beyond the shared ones come from those two runs (AWQ's
also from a third). Not fitted to: a 0.70 GB, 5-layer Llama with 16 samples (1237 tokens), where
the estimate was 1.06 x nvfp4's real time and 1.04 x gptq-w8a16's (peak RAM 1.09 and 1.08 x).
Single runs on the shared 2 cores varied 1.5-3x, so within about 2x is as close as this box tells.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.plan.methods import method as registered_method

CALIBRATION_SEQ_LEN = 512
# The worker's process before the model: demo-model tree peaks 567-578 MB for methods whose
# Hessians and activations are under 10 MB, less this process's 20 MB and the 8 MB model.
LLMCOMPRESSOR_WORKER_BYTES = 540 * 10**6
# The loaded model plus what transformers' load and llm-compressor's compressed save copy of it at
# the peak: the 0.44 GB Llama's worker peaks were 1.40-1.65 x its size beyond the other terms.
MODEL_COPIES = 1.5
# This process after importing torch and compressed-tensors' dequantize (702 MB measured): the plain
# GPTQ methods' peak on the demo model (721-723 MB), where the worker's is lower.
CHECK_PROCESS_BYTES = 700 * 10**6
FLOAT32_COPIES_CHECKED = 3

# From the run's start to the first calibration step: 3.4-4.3 s on the demo model, 4.2-5.3 s on the
# 0.44 GB Llama (its load at about 500 MB/s).
STARTUP_SECONDS = 3.6
MODEL_LOAD_BYTES_PER_S = 500 * 10**6
# Seconds per Linear parameter per calibration token, both passes (nvfp4: 0.3 s on the demo, 1.0 s
# on the 0.44 GB Llama, nothing but the passes and observers).
FORWARD_SECONDS = 1.66e-11


@dataclass(frozen=True)
class LinearWork:
    """What the quantized Linears of a model amount to for the time model.

    Attributes:
        layers: decoder layers (each calibrated in turn).
        params: elements of the weights llm-compressor quantizes.
        solve_flops: ``rows * in_features**2`` summed over those weights (GPTQ's solve).
        largest_weight: elements of the largest of them.
    """

    layers: int
    params: int
    solve_flops: int
    largest_weight: int


def linear_work(config: dict[str, Any], shapes: list[tuple[int, ...]]) -> LinearWork:
    """The time model's quantities from the config and the shapes of the weights to quantize."""
    text = config.get("text_config") or config
    matrices = [(shape[0], shape[-1]) for shape in shapes if len(shape) >= 2]
    return LinearWork(
        layers=int(text.get("num_hidden_layers") or 1),
        params=sum(rows * cols for rows, cols in matrices),
        solve_flops=sum(rows * cols * cols for rows, cols in matrices),
        largest_weight=max((rows * cols for rows, cols in matrices), default=0),
    )


def calibrated_layer_bytes(
    config: dict[str, Any], samples: int, seq_len: int, dtype_bytes: int
) -> tuple[int, int]:
    """(Hessian bytes of one decoder layer, calibration activation bytes) for GPTQ's sequential pipeline."""
    text = config.get("text_config") or config
    hidden = int(text["hidden_size"])
    intermediate = int(text.get("intermediate_size") or 4 * hidden)
    # q/k/v and gate/up see the hidden state, o_proj the attention output, down_proj the MLP's.
    heads = int(text.get("num_attention_heads") or 1)
    head_dim = int(text.get("head_dim") or hidden // heads)
    hessians = 4 * (5 * hidden**2 + (heads * head_dim) ** 2 + intermediate**2)
    activations = 2 * samples * seq_len * hidden * dtype_bytes
    return hessians, activations


def calibrating_bytes(process: int, model_bytes: int, hessians: int, activations: int) -> int:
    """The process tree while the worker calibrates: this process, the worker, the model's copies, one layer's terms."""
    return process + LLMCOMPRESSOR_WORKER_BYTES + int(model_bytes * MODEL_COPIES) + hessians + activations


def checking_bytes(largest_weight: int) -> int:
    """This process while it dequantizes plain GPTQ's packed layers to report their errors."""
    return CHECK_PROCESS_BYTES + FLOAT32_COPIES_CHECKED * 4 * largest_weight


def calibration_tokens(calibration: Path | None, source: Path, samples: int, seq_len: int) -> int:
    """Tokens the worker calibrates on: its samples of ``calibration`` by the model's tokenizer, each cut at ``seq_len``.

    Without the file (a dry run before one is named) every sample counts as ``seq_len`` tokens; without a
    ``tokenizer.json``, as a token per 4 characters.
    """
    if calibration is None:
        return samples * seq_len
    from engine.quantize.llmcompressor_worker import read_samples

    texts = read_samples(calibration, samples)
    tokenizer_file = source / "tokenizer.json"
    if tokenizer_file.is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        counts = [len(encoding.ids) for encoding in tokenizer.encode_batch(texts)]
    else:
        counts = [-(-len(text) // 4) for text in texts]
    return sum(min(count, seq_len) for count in counts)


def calibrated_seconds(method: str, model_bytes: int, work: LinearWork, tokens: int) -> float:
    """The time model of the module docstring for ``method``, with its registry record's ``calibration_time``.

    Raises:
        KeyError: ``method`` is not an llm-compressor method.
    """
    times = registered_method(method).calibration_time
    if times is None:
        raise KeyError(f"{method} is not calibrated by llm-compressor; it has no time constants")
    return (
        STARTUP_SECONDS
        + model_bytes / MODEL_LOAD_BYTES_PER_S
        + work.layers * times.layer_seconds
        + work.params * tokens * FORWARD_SECONDS * times.token_passes
        + work.solve_flops * times.solve_seconds_per_flop
        + times.finish_seconds
        + work.params * times.finish_seconds_per_param
    )
