"""tui/screens/model.py: the summary says what the KV cache holds, as vLLM caches it."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from engine.model.inspect_model import inspect_model
from tests.fixtures.tiny_gguf import write_config, write_gguf
from tests.model.test_inspect_model_real_configs import config_only
from tui.screens.model import model_summary


def _text(name: str, tmp_path: Path) -> str:
    console = Console(width=200, record=True)
    console.print(model_summary(config_only(name, tmp_path)))
    return console.export_text()


@pytest.mark.parametrize(
    ("name", "attention"),
    [
        # One latent of 512 + 64 per token and layer, not 128 KV heads; the MTP layer is not loaded.
        (
            "deepseek-v3",
            "128 heads; KV cache holds MLA latent 576 (512 + 64 rope) × 61 layers (+1 MTP, not loaded)",
        ),
        # Plain GQA keeps the heads, the KV heads and the head size (Llama-3.1-8B's card: 32 / 8 / 128).
        ("llama-3.1-8b", "32 heads, 8 KV heads, head dim 128"),
    ],
)
def test_attention_row(name: str, attention: str, tmp_path: Path) -> None:
    assert attention in _text(name, tmp_path)


def test_a_gguf_files_weights_row_shows_its_mix_of_types(tmp_path: Path) -> None:
    # The tiny GGUF's 1,213,696 weights: Q4_0 933,888 (attn_q/k/v/output, ffn_gate/up and output),
    # F16 262,144 (ffn_down), Q8_0 16,384 (token_embd), F32 1,280 (norms): 77 %, 22 %, 1 %.
    write_config(tmp_path)
    write_gguf(tmp_path / "m-Q4_0.gguf")
    console = Console(width=200, record=True)
    console.print(model_summary(inspect_model(tmp_path)))
    text = console.export_text()
    assert "1.0 MiB, GGUF Q4_0 77%, F16 22%, Q8_0 1%" in text
    assert "already quantized: gguf, GGUF Q4_0" in text
