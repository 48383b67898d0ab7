"""The facts a vLLM server reports about itself in its start-up log: KV cache, kernels, dtype, timings."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.serve.log_line import strip_log_prefix

__all__ = ["StartupFacts", "parse_startup_log"]

_GIB = 1024**3
_GB = 1000**3


@dataclass(frozen=True)
class StartupFacts:
    """What the server said about itself while starting; ``None`` where the log did not say.

    Attributes:
        weights_memory_bytes: memory the weights took (the GPU runner reports it; the CPU one does not).
        kv_cache_tokens: how many tokens the KV cache holds.
        kv_cache_bytes: the memory given to the KV cache.
        max_concurrency: how many requests of ``max_concurrency_at_tokens`` tokens fit at once.
        max_concurrency_at_tokens: the request length that figure is for (the max model length).
        linear_kernel: the first quantized linear kernel vLLM selected (e.g. ``MarlinLinearKernel``).
        dtype: the activation dtype (``bfloat16`` ...).
        warmup_seconds: the engine's profile + KV cache + warm-up time.
        linear_kernels: every quantized linear kernel selected, in order.
        compile_seconds: torch.compile time, when it ran.
        load_seconds: time to load the weights.
        vllm_version: the server's version.
        quantization: the quantization method in use (``None`` for none).
        kv_cache_dtype: the KV cache dtype (``auto`` follows the model's dtype).
        max_model_len: the maximum sequence length served.
        device: where the KV cache lives (``GPU``, ``CPU`` ...).
        attention_backend: the attention backend selected.
        ready_url: the address the API server said it listens on.
    """

    weights_memory_bytes: int | None = None
    kv_cache_tokens: int | None = None
    kv_cache_bytes: int | None = None
    max_concurrency: float | None = None
    max_concurrency_at_tokens: int | None = None
    linear_kernel: str | None = None
    dtype: str | None = None
    warmup_seconds: float | None = None
    linear_kernels: tuple[str, ...] = ()
    compile_seconds: float | None = None
    load_seconds: float | None = None
    vllm_version: str | None = None
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    max_model_len: int | None = None
    device: str | None = None
    attention_backend: str | None = None
    ready_url: str | None = None


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _size(value: str, unit: str) -> int:
    scale = _GIB if unit.lower() in ("gib", "gi") else _GB if unit.lower() == "gb" else 1024**2
    return round(float(value) * scale)


_KV_TOKENS = re.compile(r"\b(?P<device>[A-Z]+(?: \+ host)?) KV cache size: (?P<tokens>[\d,]+) tokens")
_CONCURRENCY = re.compile(r"Maximum concurrency for (?P<len>[\d,]+) tokens per request: (?P<x>[\d.]+)x")
_KV_BYTES_GPU = re.compile(r"Available KV cache memory: (?P<v>[\d.]+) ?(?P<u>GiB|GB)")
_KV_BYTES_CPU = re.compile(r"(?:Explicitly|Auto) set \((?P<v>[\d.]+)/[\d.]+\) GiB for KV cache")
_WEIGHTS = re.compile(
    r"(?:Model loading took|Loading model weights took) (?P<v>[\d.]+) ?(?P<u>GiB|GB)(?: memory)?"
    r"(?: and (?P<s>[\d.]+) seconds)?"
)
_LOAD_TIME = re.compile(r"Loading weights took (?P<s>[\d.]+) seconds")
_KERNEL = re.compile(r"(?:Selected|Using) (?P<k>\w+Kernel) for ")
_WARMUP = re.compile(
    r"init engine \(profile, create kv cache, warmup model\) took (?P<s>[\d.]+) (?:s|seconds)"
    r"(?: \(compilation: (?P<c>[\d.]+) s)?"
)
_COMPILE = re.compile(r"torch\.compile takes? (?P<c>[\d.]+) s in total")
_VERSION = re.compile(r"(?:vLLM API server version |LLM engine \(v)(?P<v>[\w.+-]+)")
_CONFIG_FIELD = {
    "dtype": re.compile(r"\bdtype=(?:torch\.)?(?P<v>\w+)"),
    "quantization": re.compile(r"\bquantization=(?P<v>[\w-]+)"),
    "kv_cache_dtype": re.compile(r"\bkv_cache_dtype=(?P<v>[\w-]+)"),
    "max_model_len": re.compile(r"\bmax_seq_len=(?P<v>\d+)"),
}
_ATTENTION = re.compile(r"Using (?P<b>\w+) attention backend")
_TIMESTAMP = re.compile(r"\b(?:INFO|WARNING|DEBUG)\s+\d\d-\d\d (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)")
# The CPU runner reports no compile time, only these two lines around its compiling warm-up.
_CPU_COMPILE_START = "Warming up model for the compilation"
_CPU_COMPILE_END = "Warming up done."
_READY = re.compile(r"(?:Starting vLLM (?:API )?server on|Uvicorn running on) (?P<url>https?://\S+)")


def parse_startup_log(lines: Iterable[str]) -> StartupFacts:
    """Reads the start-up facts from a vLLM log (any mix of API server and engine lines).

    Later lines win where a fact is repeated (a restarted engine reports again), except the
    kernels, which are collected in order.
    """
    facts: dict[str, object] = {}
    kernels: list[str] = []
    compile_started: int | None = None
    for raw in lines:
        _, message = strip_log_prefix(raw)
        if not message:
            continue
        if message.startswith((_CPU_COMPILE_START, _CPU_COMPILE_END)) and (stamp := _TIMESTAMP.search(raw)):
            seconds = int(stamp["h"]) * 3600 + int(stamp["m"]) * 60 + int(stamp["s"])
            if message.startswith(_CPU_COMPILE_START):
                compile_started = seconds
            elif compile_started is not None:
                facts.setdefault("compile_seconds", float((seconds - compile_started) % 86400))
        if match := _KV_TOKENS.search(message):
            facts["kv_cache_tokens"] = int(_number(match["tokens"]))
            facts["device"] = match["device"]
        if match := _CONCURRENCY.search(message):
            facts["max_concurrency"] = _number(match["x"])
            facts["max_concurrency_at_tokens"] = int(_number(match["len"]))
        if match := _KV_BYTES_GPU.search(message):
            facts["kv_cache_bytes"] = _size(match["v"], match["u"])
        elif match := _KV_BYTES_CPU.search(message):
            facts["kv_cache_bytes"] = _size(match["v"], "GiB")
        if match := _WEIGHTS.search(message):
            facts["weights_memory_bytes"] = _size(match["v"], match["u"])
            if match["s"]:
                facts["load_seconds"] = float(match["s"])
        if match := _LOAD_TIME.search(message):
            facts.setdefault("load_seconds", float(match["s"]))
        if (match := _KERNEL.search(message)) and match["k"] not in kernels:
            kernels.append(match["k"])
        if match := _WARMUP.search(message):
            facts["warmup_seconds"] = float(match["s"])
            if match["c"]:
                facts["compile_seconds"] = float(match["c"])
        if match := _COMPILE.search(message):
            facts.setdefault("compile_seconds", float(match["c"]))
        if "vllm_version" not in facts and (match := _VERSION.search(message)):
            facts["vllm_version"] = match["v"]
        if "with config:" in message:
            for name, pattern in _CONFIG_FIELD.items():
                if match := pattern.search(message):
                    value = match["v"]
                    facts[name] = int(value) if name == "max_model_len" else value
        if match := _ATTENTION.search(message):
            facts["attention_backend"] = match["b"]
        if match := _READY.search(message):
            facts["ready_url"] = match["url"].rstrip(".,")
    if facts.get("quantization") == "None":
        facts["quantization"] = None
    return StartupFacts(
        linear_kernel=kernels[0] if kernels else None,
        linear_kernels=tuple(kernels),
        **facts,  # type: ignore[arg-type]
    )
