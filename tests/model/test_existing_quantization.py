"""A checkpoint's own quantization_config read into the format, the scheme text and the method it is planned as."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.existing_quantization import detect_quantization
from engine.model.safetensors_headers import TensorHeader
from tests.plan.model_configs import published_config

# RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8's quantization_config (tests/fixtures/configs): FP8 W8A8, static
# per-tensor activations.
PUBLISHED_FP8_W8A8 = published_config("llama-3.1-8b-instruct-fp8")["quantization_config"]


def fp8_weight_only(strategy: str, block: list[int] | None = None) -> dict[str, Any]:
    """The config llm-compressor writes for its FP8 weight-only recipes.

    vllm-project/llm-compressor tests/e2e/vLLM/recipes/FP8/recipe_fp8_weight_only_channel.yaml and
    recipe_fp8_weight_only_per_tensor.yaml: a config group with ``weights: {num_bits: 8, type: float,
    symmetric: true, strategy: channel|tensor, dynamic: false}`` and no input_activations, saved
    ``float-quantized``; the rest as the published W8A8 config above carries it.
    """
    config = copy.deepcopy(PUBLISHED_FP8_W8A8)
    config["format"] = "float-quantized"
    group = config["config_groups"]["group_0"]
    group["input_activations"] = None
    group["weights"].update(strategy=strategy, block_structure=block)
    return config


CASES = [
    (PUBLISHED_FP8_W8A8, "compressed-tensors", "FP8 W8A8, per tensor", "fp8"),
    (fp8_weight_only("channel"), "compressed-tensors", "FP8 weight-only (W8A16), per channel", "fp8-w8a16"),
    (fp8_weight_only("tensor"), "compressed-tensors", "FP8 weight-only (W8A16), per tensor", "fp8-w8a16"),
    # vLLM's _is_fp8_w8a16 takes block weights as well (Marlin FP8 with block scales).
    (
        fp8_weight_only("block", [128, 128]),
        "compressed-tensors",
        "FP8 weight-only (W8A16), 128x128 blocks",
        "fp8-w8a16",
    ),
    # Qwen/Qwen3-8B-FP8's config (tests/fixtures/configs/qwen3-8b-fp8.json): Fp8Config has no weight-only
    # scheme (activation_scheme is "static" or "dynamic").
    (
        published_config("qwen3-8b-fp8")["quantization_config"],
        "fp8",
        "FP8 W8A8, 128x128 blocks",
        "fp8",
    ),
    # ModelOpt algos as vLLM 0.32 reads them (modelopt.py::resolve): FP8_PB_WO quantizes activations per
    # 128 block despite its name; W4A16_NVFP4 is NVFP4 weight-only. The three FP8 algos are ModelOptFp8Config's
    # (LINEAR_ALGOS owner "modelopt"), from compute 8.0: modelopt-fp8, not compressed-tensors' fp8.
    ({"quant_method": "modelopt", "quant_algo": "FP8"}, "modelopt", "FP8", "modelopt-fp8"),
    ({"quant_method": "modelopt", "quant_algo": "fp8_pb_wo"}, "modelopt", "FP8_PB_WO", "modelopt-fp8"),
    (
        {"quant_method": "modelopt", "quant_algo": "FP8_PER_CHANNEL_PER_TOKEN"},
        "modelopt",
        "FP8_PER_CHANNEL_PER_TOKEN",
        "modelopt-fp8",
    ),
    ({"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16}, "modelopt", "NVFP4", "nvfp4"),
    (
        {"quant_method": "modelopt", "quant_algo": "W4A16_NVFP4", "group_size": 16},
        "modelopt",
        "NVFP4 weight-only (W4A16_NVFP4)",
        "nvfp4a16",
    ),
]


@pytest.mark.parametrize(("quantization_config", "method", "scheme", "recommend_as"), CASES)
def test_a_published_quantization_config_is_read_as_vllm_serves_it(
    quantization_config: dict[str, Any], method: str, scheme: str, recommend_as: str
) -> None:
    found = detect_quantization({"quantization_config": quantization_config}, Path("/nonexistent"), [])
    assert found is not None
    assert (found.method, found.scheme, found.recommend_as) == (method, scheme, recommend_as)


def _expert_headers(prefix: str, projections: tuple[str, ...]) -> list[TensorHeader]:
    """Two layers of two linearized experts (llm-compressor's saved MoE layout), stored FP8, plus attention."""
    headers = [
        TensorHeader(f"model.layers.{i}.self_attn.q_proj.weight", "F8_E4M3", (64, 64)) for i in range(2)
    ]
    for layer in range(2):
        for expert in range(2):
            for proj in projections:
                name = f"model.layers.{layer}.{prefix}.experts.{expert}.{proj}.weight"
                headers.append(TensorHeader(name, "F8_E4M3", (32, 64)))
    return headers


QWEN3_MOE_EXPERTS = _expert_headers("mlp", ("gate_proj", "up_proj", "down_proj"))
MIXTRAL_EXPERTS = _expert_headers("block_sparse_moe", ("w1", "w2", "w3"))
DENSE = [TensorHeader("model.layers.0.mlp.gate_proj.weight", "F8_E4M3", (64, 64))]

# Whether vLLM 0.32 gives the routed experts the FP8 weight-only scheme, worked out by hand from
# compressed_tensors.py::get_scheme_dict as get_moe_method calls it on "<experts>.0.<proj>" (the same
# configs tests/plan/test_vllm_facts.py::test_fp8_weight_only_experts_do_not_load runs through vLLM):
# "Linear" reaches RoutedExperts; ignore and regex targets are re.match on the name.
EXPERT_CASES = [
    (QWEN3_MOE_EXPERTS, ["lm_head", "re:.*mlp.gate$"], ["Linear"], True),  # the routers only
    (QWEN3_MOE_EXPERTS, ["lm_head", "re:.*mlp.gate$", "re:.*mlp.experts.*"], ["Linear"], False),
    (QWEN3_MOE_EXPERTS, ["lm_head"], ["re:.*self_attn.*"], False),
    (QWEN3_MOE_EXPERTS, ["lm_head"], ["re:.*experts.*"], True),
    (QWEN3_MOE_EXPERTS, ["lm_head"], ["RoutedExperts"], True),
    # "experts" alone is no regex: not equal to the name, but inside the class name RoutedExperts.
    (QWEN3_MOE_EXPERTS, ["lm_head"], ["experts"], True),
    (QWEN3_MOE_EXPERTS, ["lm_head"], ["down_proj"], False),  # equality with the full name only
    (MIXTRAL_EXPERTS, ["lm_head", "re:.*block_sparse_moe.gate$"], ["Linear"], True),
    (MIXTRAL_EXPERTS, ["lm_head", "re:.*block_sparse_moe.experts.*"], ["Linear"], False),
    (DENSE, ["lm_head"], ["Linear"], None),  # no experts in the headers
    ([], ["lm_head"], ["Linear"], None),  # config-only
]


@pytest.mark.parametrize(("headers", "ignore", "targets", "expected"), EXPERT_CASES)
def test_whether_an_fp8_weight_only_config_reaches_the_experts(
    headers: list[TensorHeader], ignore: list[str], targets: list[str], expected: bool | None
) -> None:
    config = fp8_weight_only("channel")
    config["ignore"] = ignore
    config["config_groups"]["group_0"]["targets"] = targets
    found = detect_quantization({"quantization_config": config}, Path("/nonexistent"), headers)
    assert found is not None and found.recommend_as == "fp8-w8a16"
    assert found.quantizes_experts is expected


# ModelOpt 0.29's hf_quant_config.json next to a config.json without quantization_config, which vLLM 0.32
# reads as the quantization_config (transformers_utils/config.py::get_config).
HF_QUANT_CONFIGS = [
    (
        '{"producer": {"name": "modelopt", "version": "0.29.0"}, "quantization": {"quant_algo": "FP8", '
        '"kv_cache_quant_algo": null, "exclude_modules": ["lm_head"]}}',
        ("modelopt", "FP8", "modelopt-fp8"),
    ),
    (
        '{"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "NVFP4", "group_size": 16}}',
        ("modelopt", "NVFP4", "nvfp4"),
    ),
    ("{not json", ("modelopt", "ModelOpt (hf_quant_config.json)", None)),
    ("[1, 2]", ("modelopt", "ModelOpt (hf_quant_config.json)", None)),
]


@pytest.mark.parametrize(("text", "expected"), HF_QUANT_CONFIGS)
def test_an_hf_quant_config_file_is_read_as_modelopt(
    tmp_path: Path, text: str, expected: tuple[str, str, str | None]
) -> None:
    (tmp_path / "hf_quant_config.json").write_text(text)
    found = detect_quantization({}, tmp_path, [])
    assert found is not None
    assert (found.method, found.scheme, found.recommend_as) == expected


# MXFP8 and MIXED_PRECISION in both forms vLLM 0.32 reads (modelopt.py::ModelOptQuantConfigBase.from_config):
# config.json's flat quantization_config, or hf_quant_config.json's "quantization" section. The mixed scheme
# names the algos of the layers its exclude list leaves (ModelOptMixedPrecisionConfig.get_quant_method).
MIXED_LAYERS = {
    "model.layers.0.self_attn.q_proj": {"quant_algo": "FP8"},
    "model.layers.0.mlp.experts.0.gate_proj": {"quant_algo": "NVFP4", "group_size": 16},
    "model.layers.0.mlp.down_proj": {"quant_algo": "MXFP8"},
}
MODELOPT_FORMS = [
    ({"quant_method": "modelopt", "quant_algo": "MXFP8", "ignore": ["lm_head"]}, "MXFP8 (E8M0 scale per 32)"),
    (
        {"quant_method": "modelopt", "quant_algo": "mxfp8"},
        "MXFP8 (E8M0 scale per 32)",
    ),  # ModelOpt's lowercase
    (
        {"quant_method": "modelopt", "quant_algo": "MIXED_PRECISION", "quantized_layers": MIXED_LAYERS},
        "MIXED_PRECISION (FP8 + MXFP8 + NVFP4)",
    ),
    (
        {
            "quant_method": "modelopt",
            "quant_algo": "MIXED_PRECISION",
            "ignore": ["model.layers.0.mlp.down_proj"],
            "quantized_layers": MIXED_LAYERS,
        },
        "MIXED_PRECISION (FP8 + NVFP4)",
    ),
    # config.json holding the nested form: from_config reads "quantization" wherever it is.
    (
        {"quant_method": "modelopt", "quantization": {"quant_algo": "MXFP8", "exclude_modules": []}},
        "MXFP8 (E8M0 scale per 32)",
    ),
]


@pytest.mark.parametrize(("quantization_config", "scheme"), MODELOPT_FORMS)
def test_modelopt_mxfp8_and_mixed_precision_configs_are_recognised(
    quantization_config: dict[str, Any], scheme: str
) -> None:
    found = detect_quantization({"quantization_config": quantization_config}, Path("/nonexistent"), [])
    assert found is not None
    recommend_as = "modelopt-mixed" if scheme.startswith("MIXED") else "modelopt-mxfp8"
    assert (found.method, found.scheme, found.recommend_as) == ("modelopt", scheme, recommend_as)


HF_QUANT_FILES = [
    (
        {"quant_algo": "MXFP8", "kv_cache_quant_algo": None, "exclude_modules": ["lm_head"]},
        ("modelopt", "MXFP8 (E8M0 scale per 32)", "modelopt-mxfp8"),
    ),
    (
        {
            "quant_algo": "MIXED_PRECISION",
            "kv_cache_quant_algo": "FP8",
            "exclude_modules": ["model.layers.0.self_attn*"],  # ModelOpt's wildcard drops the FP8 layer
            "quantized_layers": MIXED_LAYERS,
        },
        ("modelopt", "MIXED_PRECISION (MXFP8 + NVFP4)", "modelopt-mixed"),
    ),
]


@pytest.mark.parametrize(("section", "expected"), HF_QUANT_FILES)
def test_an_hf_quant_config_file_with_mxfp8_or_mixed_precision_is_recognised(
    tmp_path: Path, section: dict[str, Any], expected: tuple[str, str, str]
) -> None:
    (tmp_path / "hf_quant_config.json").write_text(json.dumps({"quantization": section}))
    found = detect_quantization({}, tmp_path, [])
    assert found is not None
    assert (found.method, found.scheme, found.recommend_as) == expected
