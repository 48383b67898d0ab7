"""The calibrated (llm-compressor) memory and time model: each term and the estimate worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.quantize.calibrated_cost import (
    LinearWork,
    calibrated_layer_bytes,
    calibrated_seconds,
    calibrating_bytes,
    calibration_tokens,
    checking_bytes,
    linear_work,
)
from engine.quantize.estimate import estimate
from engine.quantize.request import QuantizeRequest
from tests.quantize.quantize_support import build_tiny_llama

DEMO = {"hidden_size": 256, "intermediate_size": 768, "num_attention_heads": 4, "head_dim": 64}
# The demo model's Linears (4 layers): q, o 256x256, k, v 128x256, gate, up 768x256, down 256x768.
DEMO_SHAPES = [(256, 256), (128, 256), (128, 256), (256, 256), (768, 256), (768, 256), (256, 768)] * 4
# 0.44 GB bench Llama (benchmarks' LLAMA_1B, 2 layers): q, o 2048x2048, k, v 256x2048, gate, up 5632x2048,
# down 2048x5632.
LLAMA = {"hidden_size": 2048, "intermediate_size": 5632, "num_attention_heads": 32, "num_hidden_layers": 2}
LLAMA_SHAPES = [
    (2048, 2048),
    (256, 2048),
    (256, 2048),
    (2048, 2048),
    (5632, 2048),
    (5632, 2048),
    (2048, 5632),
] * 2


@pytest.mark.parametrize(
    ("config", "samples", "seq_len", "hessians", "activations"),
    [
        # The demo/tiny Llama: 4 x (5 x 256^2 + 256^2 + 768^2) and 2 x 128 x 512 x 256 x 2.
        (DEMO, 128, 512, 3932160, 67108864),
        # Llama-3-8B: 4 x (5 x 4096^2 + 4096^2 + 14336^2); 2 x 512 x 2048 x 4096 x 2.
        (
            {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32},
            512,
            2048,
            4 * (6 * 4096**2 + 14336**2),
            17179869184,
        ),
    ],
)
def test_calibrated_layer_terms(
    config: dict[str, int], samples: int, seq_len: int, hessians: int, activations: int
) -> None:
    assert calibrated_layer_bytes(config, samples, seq_len, 2) == (hessians, activations)


@pytest.mark.parametrize(
    ("process", "model_bytes", "config", "samples", "expected"),
    [
        # Demo model, 8 samples, this process at 20 MB (as the benchmark's child measures it):
        # 20e6 + 540e6 worker + 1.5 x 8393216 model (12589824) + 3932160 Hessians
        # + 2 x 8 x 512 x 256 x 2 activations (4194304) = 580716288 (measured tree peaks 587-598 MB).
        (20 * 10**6, 8393216, DEMO, 8, 580716288),
        # The 0.44 GB Llama (219162624 bf16 parameters, 438325248 B), 8 samples: 20e6 + 540e6
        # + 657487872 + 4 x (5 x 2048^2 + 2048^2 + 5632^2) = 227540992 + 2 x 8 x 512 x 2048 x 2 = 33554432
        # = 1478583296 (measured 1455 MB gptq-w8a16, 1492 MB gptq-w4a16, 1547 MB smoothquant-int8).
        (20 * 10**6, 438325248, LLAMA, 8, 1478583296),
        # The same with 128 samples and a 300 MB process: + 280e6 + 15 x 33554432 more activations.
        (300 * 10**6, 438325248, LLAMA, 128, 1478583296 + 280 * 10**6 + 15 * 33554432),
    ],
)
def test_the_calibrating_peak_adds_this_process_and_the_worker(
    process: int, model_bytes: int, config: dict[str, int], samples: int, expected: int
) -> None:
    hessians, activations = calibrated_layer_bytes(config, samples, 512, 2)
    assert calibrating_bytes(process, model_bytes, hessians, activations) == expected


@pytest.mark.parametrize(
    ("largest_weight", "expected"),
    [
        # The demo's 768 x 256 gate/up: 700e6 + 3 x 4 x 196608 (measured peaks 721-723 MB).
        (768 * 256, 702359296),
        # Llama-3-8B's 14336 x 4096 MLP weights: 700e6 + 12 x 58720256.
        (14336 * 4096, 1404643072),
    ],
)
def test_the_layer_error_check_holds_compressed_tensors_and_three_float_copies(
    largest_weight: int, expected: int
) -> None:
    assert checking_bytes(largest_weight) == expected


@pytest.mark.parametrize(
    ("config", "shapes", "expected"),
    [
        # 4 x 786432 elements; solve per layer: 2 x 256 x 256^2 + 2 x 128 x 256^2 + 2 x 768 x 256^2
        # + 256 x 768^2 = 301989888.
        ({**DEMO, "num_hidden_layers": 4}, DEMO_SHAPES, LinearWork(4, 3145728, 4 * 301989888, 196608)),
        # 2 x 44040192 elements; solve per layer 2 x 2048^3 + 2 x 256 x 2048^2 + 2 x 5632 x 2048^2
        # + 2048 x 5632^2 = 131533373440.
        (LLAMA, LLAMA_SHAPES, LinearWork(2, 88080384, 2 * 131533373440, 11534336)),
    ],
)
def test_linear_work(config: dict[str, int], shapes: list[tuple[int, ...]], expected: LinearWork) -> None:
    assert linear_work(config, shapes) == expected


@pytest.mark.parametrize(
    ("method", "model_bytes", "work", "tokens", "expected"),
    [
        # Demo model: 3.6 + 8393216 / 5e8 + 4 x 0.22 + 3145728 x 592 x 1.66e-11 + 1207959552 x 6.9e-11
        # + 5.9 + 3145728 x 3.8e-8 = 3.6 + 0.016786 + 0.88 + 0.030914 + 0.083349 + 5.9 + 0.119538
        # = 10.6306 (measured 10.4 s).
        ("gptq-w8a16", 8393216, LinearWork(4, 3145728, 1207959552, 196608), 592, 10.6306),
        # 0.44 GB Llama: 3.6 + 438325248 / 5e8 + 2 x 0.22 + 88080384 x 592 x 1.66e-11
        # + 263066746880 x 6.9e-11 + 5.9 + 88080384 x 3.8e-8
        # = 3.6 + 0.876650 + 0.44 + 0.865584 + 18.151606 + 5.9 + 3.347055 = 33.1809 (measured 33.0 s).
        ("gptq-w8a16", 438325248, LinearWork(2, 88080384, 263066746880, 11534336), 592, 33.1809),
        # AWQ: no solve, 18.7 token passes: 3.6 + 0.876650 + 2 x 1.78 + 88080384 x 592 x 1.66e-11 x 18.7
        # + 1.2 + 88080384 x 1.4e-8 = 3.6 + 0.876650 + 3.56 + 16.186412 + 1.2 + 1.233125 = 26.6562
        # (measured 51.5-58.9 s: see the awq-w4a16 record in engine/plan/methods.py).
        ("awq-w4a16", 438325248, LinearWork(2, 88080384, 263066746880, 11534336), 592, 26.6562),
        # 128 full samples instead: the passes grow with the tokens, the solve does not:
        # 33.1809 + 88080384 x (65536 - 592) x 1.66e-11 = 33.1809 + 94.9569 = 128.1378.
        ("gptq-w8a16", 438325248, LinearWork(2, 88080384, 263066746880, 11534336), 65536, 128.1378),
    ],
)
def test_calibrated_seconds(
    method: str, model_bytes: int, work: LinearWork, tokens: int, expected: float
) -> None:
    assert calibrated_seconds(method, model_bytes, work, tokens) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("method", ["fp8", "w4a16", "bf16"])
def test_a_method_llm_compressor_does_not_make_has_no_time_model(method: str) -> None:
    with pytest.raises(KeyError, match="not calibrated by llm-compressor"):
        calibrated_seconds(method, 8393216, LinearWork(4, 3145728, 1207959552, 196608), 592)


def test_calibration_tokens_are_the_samples_cut_at_the_sequence_length(tmp_path: Path) -> None:
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("a" * 10 + "\n\n" + "b" * 40 + "\n\n" + "c" * 4 + "\n", encoding="utf-8")
    # No tokenizer.json: a token per 4 characters, rounded up: 3 + 10 + 1; cut at 8: 3 + 8 + 1;
    # the first two samples only: 3 + 10.
    assert calibration_tokens(calibration, tmp_path, 3, 512) == 14
    assert calibration_tokens(calibration, tmp_path, 3, 8) == 12
    assert calibration_tokens(calibration, tmp_path, 2, 512) == 13
    # No file named yet: every sample at the full length.
    assert calibration_tokens(None, tmp_path, 8, 512) == 4096


def test_the_estimate_is_this_process_plus_the_hand_worked_terms(tmp_path: Path) -> None:
    """The tiny Llama (2 layers of the demo's shape, vocab 512): model 3672576 B, through ``estimate``."""
    import psutil

    tiny = build_tiny_llama(tmp_path / "tiny")
    cost = estimate(QuantizeRequest(tiny, "smoothquant-int8", output=tmp_path / "out", calibration_samples=8))
    process = psutil.Process().memory_info().rss
    # 540e6 + 1.5 x 3672576 + 3932160 + 2 x 8 x 512 x 256 x 2 = 553635328 beyond this process.
    assert cost.peak_ram_bytes - 553635328 == pytest.approx(process, rel=0.05)
    assert "this process" in cost.memory_model and "worker" in cost.memory_model
