"""quant-tui recommend: the header and JSON say what the KV cache holds per token, as vLLM caches it; the quantize
line is one quant-tui runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.tiny_gguf import write_gguf
from tests.plan.model_configs import write_config
from tests.quant_tui_command import QUANT_TUI, REPO
from tui.cli import main

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
    write_config(tmp_path, name)
    assert main(["recommend", "--model", str(tmp_path), "--gpu", gpu]) == 0
    header = " ".join(capsys.readouterr().out.split("context")[0].split())
    assert attention in header
    if not_shown:
        assert not_shown not in header
    assert main(["recommend", "--model", str(tmp_path), "--gpu", gpu, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["attention"] == attention


@pytest.mark.parametrize(
    ("name", "quantize_line"),
    [
        ("llama-3.1-8b", "  quantize: quant-tui quantize --model {model} --method fp8"),
        ("gemma-3-27b-it", None),  # multimodal: `quant-tui quantize` refuses it
    ],
)
def test_the_quantize_line_is_one_quant_tui_runs(
    name: str, quantize_line: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(tmp_path, name)
    assert main(["recommend", "--model", str(tmp_path), "--gpu", "H100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    quantize = [line for line in lines if line.startswith("  quantize:")]
    assert quantize == ([quantize_line.format(model=tmp_path)] if quantize_line else [])
    assert main(["recommend", "--model", str(tmp_path), "--gpu", "H100", "--json"]) == 0
    refusal = json.loads(capsys.readouterr().out)["candidates"][0]["quantize_refusal"]
    assert (refusal is None) is (quantize_line is not None)


# VLLM_PP_LAYER_PARTITION=30,50 for Llama-3.1-70B bf16, P 2 × T 2 on 4 H100, by hand: one layer
# 1,711,308,800 B, embed_tokens = lm_head 2,101,346,304 B, final norm 16,384 B.
#   stage 0: 30 layers + embed_tokens = 53,440,610,304 B → 26,720,305,152 per GPU
#   stage 1: 50 layers + lm_head + norm = 87,666,802,688 B → 43,833,401,344 per GPU (more weights and
#   more layers to cache: the tightest)
# and the server is given the same partition, in the environment where vLLM reads it.
def test_a_layer_partition_from_the_environment_is_planned_and_passed_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, "llama-3.1-70b")
    argv = ["recommend", "--model", str(tmp_path), "--gpu", "H100x4", "--json"]
    argv += ["--pipeline-parallel-size", "2", "--tensor-parallel-size", "2"]
    assert main(argv) == 0
    default = json.loads(capsys.readouterr().out)["candidates"]
    monkeypatch.setenv("VLLM_PP_LAYER_PARTITION", "30, 50")
    assert main(argv) == 0
    planned = json.loads(capsys.readouterr().out)["candidates"]
    as_is = next(c for c in planned if not c["needs_quantization"])
    assert as_is["memory"]["weights_bytes_per_device"] == 43_833_401_344
    assert as_is["env"] == {"VLLM_PP_LAYER_PARTITION": "30,50"}
    assert as_is["command"].startswith("VLLM_PP_LAYER_PARTITION=30,50 vllm serve ")
    assert all("VLLM_PP_LAYER_PARTITION" not in c["command"] for c in default)  # unset: vLLM's own split


def test_a_gguf_file_without_model_metadata_is_one_line_on_stderr(tmp_path: Path) -> None:
    # transformers' GGUF reader warns about the missing keys on its own logger; only quant-tui's line shows.
    write_gguf(tmp_path / "m.gguf")
    done = subprocess.run(
        [*QUANT_TUI, "recommend", "--model", str(tmp_path), "--gpu", "L4"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "quant-tui: error: cannot read a model config from m.gguf (its metadata has no num_hidden_layers, "
        "hidden_size, vocab_size); put the original model's config.json beside the GGUF file"
    ]
