"""quant-tui recommend: the header and JSON say what the KV cache holds per token, as vLLM caches it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tui.cli import main

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"

# config -> what the KV cache holds, from each config.json: DeepSeek-V3 caches one latent of
# kv_lora_rank 512 + qk_rope_head_dim 64 per layer (61 layers, its MTP layer not loaded) instead of
# 128 heads; Llama-3.1-8B 8 KV heads of 128 dims in 32 layers.
ATTENTION = [
    (
        "deepseek-v3",
        "H200x8",
        "MLA latent 576 (512 + 64 rope) × 61 layers (+1 MTP, not loaded)",
        "128 KV heads",
    ),
    ("llama-3.1-8b", "H100", "GQA 8 KV heads × 128 × 32 layers", None),
]


@pytest.mark.parametrize(("name", "gpu", "attention", "not_shown"), ATTENTION)
def test_the_header_and_json_show_the_attention_as_cached(
    name: str,
    gpu: str,
    attention: str,
    not_shown: str | None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copy(CONFIGS / f"{name}.json", tmp_path / "config.json")
    assert main(["recommend", "--model", str(tmp_path), "--gpu", gpu]) == 0
    header = " ".join(capsys.readouterr().out.split("context")[0].split())
    assert attention in header
    if not_shown:
        assert not_shown not in header
    assert main(["recommend", "--model", str(tmp_path), "--gpu", gpu, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["attention"] == attention
