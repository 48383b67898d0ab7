"""tui/screens/model.py: the summary says what the KV cache holds, as vLLM caches it."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

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
