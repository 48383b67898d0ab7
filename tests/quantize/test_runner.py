"""The streaming data-free quantizer on tiny random Llamas: tensors, scales, config, files, progress and ignores."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from compressed_tensors.quantization import QuantizationConfig
from safetensors import safe_open

from engine.errors import QuantTuiError
from engine.plan.methods import default_output_dir
from engine.quantize.request import DATA_FREE_METHODS, QuantizeProgress, QuantizeReport, QuantizeRequest
from engine.quantize.runner import preflight, quantize_model
from engine.quantize.schemes import SCHEMES, Scheme
from tests.quantize.quantize_support import build_tiny_llama, build_tiny_mixtral
from tests.quantize.test_schemes import (
    packed_reference,
    reference,
    reference_global_scale,
    same_bits,
)

METHODS = DATA_FREE_METHODS
FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("w1", "w3"))
DTYPES = ("bfloat16", "float16")
LINEAR_SUFFIXES = ("_proj.weight",)


@pytest.fixture(scope="module")
def tiny_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random Llama per dtype, built once for the module."""
    root = tmp_path_factory.mktemp("sources")
    return {dtype: build_tiny_llama(root / f"tiny-llama-{dtype}", dtype=dtype) for dtype in DTYPES}


@pytest.fixture(scope="module")
def quantized(
    tiny_sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], tuple[QuantizeReport, list[QuantizeProgress], str]]:
    """Every method on every dtype, with the progress events and a hash of the source taken before and after."""
    results = {}
    out_root = tmp_path_factory.mktemp("outputs")
    for dtype, source in tiny_sources.items():
        before = folder_hash(source)
        for method in METHODS:
            events: list[QuantizeProgress] = []
            request = QuantizeRequest(source, method, output=out_root / f"{source.name}-{method}", workers=3)
            report = quantize_model(request, on_progress=events.append, max_shard_bytes=700_000)
            results[(method, dtype)] = (report, events, before)
    return results


def folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_all(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118
                tensors[name] = handle.get_tensor(name)
    return tensors


CASES = [(method, dtype) for method in METHODS for dtype in DTYPES]


def fused_global_scale(source: dict[str, torch.Tensor], module: str) -> torch.Tensor:
    """The NVFP4 global scale llm-compressor gives a weight: the smallest over the Linear layers vLLM fuses with it."""
    parent, _, leaf = module.rpartition(".")
    group = next((group for group in FUSED if leaf in group), (leaf,))
    scales = [reference_global_scale(source[f"{parent}.{other}.weight"]) for other in group]
    return min(scales, key=float)


def expected_tensors(source: dict[str, torch.Tensor], module: str, scheme: Scheme) -> dict[str, torch.Tensor]:
    """The tensors compressed-tensors' compressor writes for one Linear weight under ``scheme``."""
    weight = source[f"{module}.weight"]
    global_scale = fused_global_scale(source, module) if scheme.global_scale else None
    scale, _ = reference(weight, scheme, global_scale)
    packed = packed_reference(weight, scheme, global_scale)
    if global_scale is not None:
        return {
            f"{module}.weight_packed": packed,
            f"{module}.weight_scale": scale.to(torch.float8_e4m3fn),
            f"{module}.weight_global_scale": global_scale,
        }
    if scheme.packed:
        return {
            f"{module}.weight_packed": packed,
            f"{module}.weight_scale": scale,
            f"{module}.weight_shape": torch.tensor(weight.shape),
        }
    return {f"{module}.weight": packed, f"{module}.weight_scale": scale}


def reference_dequantized(source: dict[str, torch.Tensor], module: str, scheme: Scheme) -> torch.Tensor:
    """compressed-tensors' dequantization of its own quantization of the weight, in float32."""
    from compressed_tensors.quantization import preset_name_to_scheme
    from compressed_tensors.quantization.lifecycle.forward import dequantize

    weight = source[f"{module}.weight"]
    global_scale = fused_global_scale(source, module) if scheme.global_scale else None
    scale, values = reference(weight, scheme, global_scale)
    args = preset_name_to_scheme(scheme.preset, ["Linear"]).weights
    return dequantize(values, scale.float(), args=args, dtype=torch.float32, global_scale=global_scale)


@pytest.mark.parametrize(("method", "dtype"), CASES)
def test_every_linear_weight_is_replaced_by_compressed_tensors_values(
    quantized: dict, tiny_sources: dict[str, Path], method: str, dtype: str
) -> None:
    report, _, _ = quantized[(method, dtype)]
    scheme = SCHEMES[method]
    source = load_all(tiny_sources[dtype])
    output = load_all(report.output)
    expected_names = set()
    for name, weight in source.items():
        module = name.removesuffix(".weight")
        if not name.endswith(LINEAR_SUFFIXES):
            expected_names.add(name)
            assert same_bits(output[name], weight), f"{name} was not copied verbatim"
            continue
        for expected_name, expected in expected_tensors(source, module, scheme).items():
            assert same_bits(output[expected_name], expected), f"{expected_name} differs"
            expected_names.add(expected_name)
    assert set(output) == expected_names
    assert report.tensors_quantized == sum(name.endswith(LINEAR_SUFFIXES) for name in source)
    assert report.tensors_copied == len(source) - report.tensors_quantized


@pytest.mark.parametrize(("method", "dtype"), CASES)
def test_config_index_and_side_files(
    quantized: dict, tiny_sources: dict[str, Path], method: str, dtype: str
) -> None:
    report, _, _ = quantized[(method, dtype)]
    source_config = json.loads((tiny_sources[dtype] / "config.json").read_text())
    config = json.loads((report.output / "config.json").read_text())
    quant = config.pop("quantization_config")
    assert config == source_config
    validated = QuantizationConfig.model_validate(quant)
    assert validated.format == SCHEMES[method].format
    assert validated.ignore == ["lm_head"]
    shards = sorted(report.output.glob("*.safetensors"))
    assert len(shards) > 1, "the test asks for small shards to exercise the index"
    index = json.loads((report.output / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {path.name for path in shards}
    assert set(index["weight_map"]) == set(load_all(report.output))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (report.output / name).read_bytes() == (tiny_sources[dtype] / name).read_bytes()
    card = (report.output / "README.md").read_text()
    assert method in card and tiny_sources[dtype].name in card and report.layer_errors[0].name in card
    assert report.output_bytes == sum(path.stat().st_size for path in shards)
    assert not [path for path in report.output.parent.iterdir() if path.name.startswith(".")]


@pytest.mark.parametrize(("method", "dtype"), CASES)
def test_source_is_untouched(quantized: dict, tiny_sources: dict[str, Path], method: str, dtype: str) -> None:
    _, _, before = quantized[(method, dtype)]
    assert folder_hash(tiny_sources[dtype]) == before


@pytest.mark.parametrize(("method", "dtype"), CASES)
def test_layer_errors_are_the_dequantization_errors_worst_first(
    quantized: dict, tiny_sources: dict[str, Path], method: str, dtype: str
) -> None:
    report, _, _ = quantized[(method, dtype)]
    source = load_all(tiny_sources[dtype])
    errors = {error.name: error for error in report.layer_errors}
    assert len(errors) == report.tensors_quantized
    relative = [error.relative_error for error in report.layer_errors]
    assert relative == sorted(relative, reverse=True)
    name = "model.layers.1.mlp.gate_proj"
    weight = source[f"{name}.weight"]
    restored = reference_dequantized(source, name, SCHEMES[method])
    expected = float(torch.linalg.norm(weight.float() - restored) / torch.linalg.norm(weight.float()))
    assert errors[name].relative_error == pytest.approx(expected, rel=1e-4)
    assert errors[name].snr_db == pytest.approx(-20 * math.log10(expected), rel=1e-4)


@pytest.mark.parametrize(("method", "dtype"), CASES)
def test_progress_is_monotonic_and_ends_complete(quantized: dict, method: str, dtype: str) -> None:
    report, events, _ = quantized[(method, dtype)]
    quantizing = [event for event in events if event.stage == "quantizing"]
    assert quantizing, "no progress while quantizing"
    done = [event.bytes_done for event in quantizing]
    assert done == sorted(done)
    last = quantizing[-1]
    assert last.tensors_done == last.tensors_total == report.tensors_quantized + report.tensors_copied
    assert last.bytes_done == last.bytes_total == report.input_bytes
    assert events[-1].stage == "done"
    assert all(event.peak_rss_bytes > 0 for event in events)


@pytest.mark.parametrize("method", METHODS)
def test_transformers_decompresses_the_output_to_compressed_tensors_dequantized_weights(
    quantized: dict, tiny_sources: dict[str, Path], method: str
) -> None:
    """An independent reader (transformers + compressed-tensors' decompressor) understands the checkpoint."""
    from transformers import AutoModelForCausalLM

    report, _, _ = quantized[(method, "bfloat16")]
    model = AutoModelForCausalLM.from_pretrained(report.output)
    model(torch.tensor([[1, 5, 6]]))  # the first forward decompresses the weights
    source = load_all(tiny_sources["bfloat16"])
    for name in ("model.layers.0.self_attn.k_proj", "model.layers.1.mlp.gate_proj"):
        expected = reference_dequantized(source, name, SCHEMES[method])
        loaded = model.get_submodule(name).weight.detach()
        assert same_bits(loaded, expected.to(loaded.dtype)), name


def test_worker_count_does_not_change_a_byte(tiny_sources: dict[str, Path], tmp_path: Path) -> None:
    source = tiny_sources["bfloat16"]
    outputs = []
    for workers in (1, 4):
        output = tmp_path / f"w{workers}"
        quantize_model(QuantizeRequest(source, "w4a16", output=output, workers=workers))
        outputs.append(output)
    for path in outputs[0].glob("*.safetensors"):
        assert path.read_bytes() == (outputs[1] / path.name).read_bytes()


@pytest.mark.parametrize(
    ("patterns", "left_out"),
    [
        (("*.mlp.down_proj",), {"model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"}),
        (
            ("model.layers.0.self_attn.q_proj",),
            {f"model.layers.0.self_attn.{p}_proj" for p in "qkv"},
        ),
        (
            ("re:model\\.layers\\.1\\.mlp\\.up_proj$",),
            {"model.layers.1.mlp.up_proj", "model.layers.1.mlp.gate_proj"},
        ),
    ],
)
def test_ignored_layers_stay_16_bit_with_their_fused_siblings(
    tiny_sources: dict[str, Path], tmp_path: Path, patterns: tuple[str, ...], left_out: set[str]
) -> None:
    source = tiny_sources["bfloat16"]
    report = quantize_model(QuantizeRequest(source, "fp8", output=tmp_path / "out", ignore=patterns))
    config = json.loads((report.output / "config.json").read_text())["quantization_config"]
    assert set(config["ignore"]) == left_out | {"lm_head"}
    output = load_all(report.output)
    original = load_all(source)
    for module in left_out:
        assert same_bits(output[f"{module}.weight"], original[f"{module}.weight"])
        assert f"{module}.weight_scale" not in output
    assert {error.name for error in report.layer_errors}.isdisjoint(left_out)


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        (("*.nothing_here",), "matches no Linear layer"),
        (("re:(",), "not a valid regular expression"),
    ],
)
def test_bad_ignore_patterns_are_refused(
    tiny_sources: dict[str, Path], tmp_path: Path, patterns: tuple[str, ...], message: str
) -> None:
    with pytest.raises(QuantTuiError, match=message):
        preflight(QuantizeRequest(tiny_sources["bfloat16"], "fp8", output=tmp_path / "out", ignore=patterns))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", [method for method in METHODS if method != "fp8-block"])
def test_mixtral_experts_are_quantized_and_the_router_is_left_alone(tmp_path: Path, method: str) -> None:
    source = build_tiny_mixtral(tmp_path / "tiny-mixtral")
    report = quantize_model(QuantizeRequest(source, method, output=tmp_path / "out"))
    config = json.loads((report.output / "config.json").read_text())["quantization_config"]
    assert config["ignore"] == ["lm_head", "model.layers.0.block_sparse_moe.gate"]
    output = load_all(report.output)
    assert output["model.layers.0.block_sparse_moe.gate.weight"].dtype == torch.bfloat16
    assert "model.layers.0.block_sparse_moe.experts.1.w2.weight_scale" in output
    with pytest.raises(QuantTuiError, match="MoE expert"):
        preflight(QuantizeRequest(source, method, output=tmp_path / "o2", ignore=("*.experts.0.w1",)))


@pytest.mark.parametrize(
    ("source", "method", "expected"),
    [
        ("/models/tiny-llama", "fp8", "/models/tiny-llama-FP8-Dynamic"),
        ("/models/tiny-llama/", "int8-w8a8", "/models/tiny-llama-W8A8-INT8"),
        ("/models/tiny-llama", "w4a16", "/models/tiny-llama-W4A16"),
        ("/models/tiny-llama", "gptq-w4a16", "/models/tiny-llama-W4A16-GPTQ"),
        ("/models/tiny-llama", "awq-w4a16", "/models/tiny-llama-W4A16-AWQ"),
    ],
)
def test_default_output_dir_is_named_after_source_and_method(source: str, method: str, expected: str) -> None:
    assert default_output_dir(Path(source), method) == Path(expected)


def test_default_output_for_a_hub_cache_snapshot_goes_to_quant_tui_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUANT_TUI_CACHE", str(tmp_path / "cache"))
    snapshot = tmp_path / "hub" / "models--meta-llama--Llama-3.2-1B" / "snapshots" / "abc123"
    assert (
        default_output_dir(snapshot, "fp8") == tmp_path / "cache" / "quantized" / "Llama-3.2-1B-FP8-Dynamic"
    )


def test_fp8_block_refuses_a_fused_part_that_is_not_whole_blocks(tmp_path: Path) -> None:
    """The tiny Mixtral's k_proj has 64 rows: vLLM cannot fuse it into q/k/v with 128-row scale blocks."""
    source = build_tiny_mixtral(tmp_path / "tiny-mixtral")
    with pytest.raises(QuantTuiError, match=r"k_proj to have a multiple of 128 rows.*use fp8"):
        preflight(QuantizeRequest(source, "fp8-block", output=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["fp8-block", "nvfp4a16", "w8a16"])
def test_work_split_does_not_change_a_byte(
    tiny_sources: dict[str, Path], tmp_path: Path, method: str
) -> None:
    """Block scales and global scales survive any split into items and workers."""
    from engine.quantize import work_split

    source = tiny_sources["bfloat16"]
    whole = quantize_model(QuantizeRequest(source, method, output=tmp_path / "whole", workers=1))
    previous = work_split.CHUNK_ELEMENTS, work_split.BLOCK_ELEMENTS
    work_split.CHUNK_ELEMENTS, work_split.BLOCK_ELEMENTS = 1 << 15, 1 << 12
    try:
        split = quantize_model(QuantizeRequest(source, method, output=tmp_path / "split", workers=3))
    finally:
        work_split.CHUNK_ELEMENTS, work_split.BLOCK_ELEMENTS = previous
    assert (whole.output / "model.safetensors").read_bytes() == (
        split.output / "model.safetensors"
    ).read_bytes()
