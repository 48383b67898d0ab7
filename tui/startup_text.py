"""What vLLM said about itself at start-up, as short phrases: one wording for the CLI's ready block and the Serve screen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.units import format_bytes, format_duration

if TYPE_CHECKING:
    from engine.serve.startup_facts import StartupFacts


def _size(count: int) -> str:
    # Two decimals: these are compared by eye with the plan's figures (plan vs. actual).
    return format_bytes(count, "MiB", digits=2)


def kv_cache_phrase(facts: StartupFacts) -> str | None:
    """``524,288 tokens (1.00 GiB), 256.00 requests of 2,048 tokens at once``; ``None`` when vLLM did not say."""
    if facts.kv_cache_tokens is None:
        return None
    text = f"{facts.kv_cache_tokens:,} tokens"
    if facts.kv_cache_bytes is not None:
        text += f" ({_size(facts.kv_cache_bytes)})"
    if facts.max_concurrency is not None and facts.max_concurrency_at_tokens is not None:
        text += (
            f", {facts.max_concurrency:.2f} requests of {facts.max_concurrency_at_tokens:,} tokens at once"
        )
    return text


def engine_phrases(facts: StartupFacts) -> list[str]:
    """The engine's weights, dtype, quantization, kernel and timings, each as ``name value``."""
    phrases = []
    if facts.weights_memory_bytes is not None:
        phrases.append(f"weights {_size(facts.weights_memory_bytes)}")
    if facts.dtype:
        phrases.append(f"dtype {facts.dtype}")
    if facts.quantization:
        phrases.append(f"quantization {facts.quantization}")
    if facts.linear_kernel:
        phrases.append(f"kernel {facts.linear_kernel}")
    if facts.load_seconds is not None:
        phrases.append(f"weights loaded in {format_duration(facts.load_seconds)}")
    if facts.warmup_seconds is not None:
        phrases.append(f"engine start-up {format_duration(facts.warmup_seconds)}")
    return phrases
