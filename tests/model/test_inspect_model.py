"""Tests for engine.model.inspect_model: config-only estimates for real architectures, header counts, quantization, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from engine.errors import ModelError
from engine.model.header_counts import classify_tensor
from engine.model.inspect_model import human_params, inspect_model

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"

# Exact parameter counts of the published checkpoints (their safetensors index "total_parameters"
# or the sum of their tensor sizes); the config-only estimate must land within 1%.
REAL_COUNTS = [
    ("llama-3.1-8b", 8_030_261_248, 32, 8, 128),
    ("llama-3.1-70b", 70_553_706_496, 80, 8, 128),
    ("mistral-7b-v0.1", 7_241_732_096, 32, 8, 128),
    ("mixtral-8x7b-v0.1", 46_702_792_704, 32, 8, 128),
    ("qwen2.5-7b", 7_615_616_512, 28, 4, 128),
    ("qwen2.5-0.5b", 494_032_768, 24, 2, 64),
    ("qwen3-8b", 8_190_735_360, 36, 8, 128),
]


def _model_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(CONFIGS / f"{name}.json", folder / "config.json")
    return folder


@pytest.mark.parametrize(("name", "params", "layers", "kv_heads", "head_dim"), REAL_COUNTS)
def test_config_only_estimate_is_within_one_percent(
    tmp_path: Path, name: str, params: int, layers: int, kv_heads: int, head_dim: int
) -> None:
    info = inspect_model(_model_folder(tmp_path, name))
    assert info.params_source == "estimate"
    assert abs(info.params - params) / params < 0.01
    assert (info.num_layers, info.num_kv_heads, info.head_dim) == (layers, kv_heads, head_dim)
    assert info.weight_bytes == 0
    assert info.quantization is None


def test_mixtral_counts_experts(tmp_path: Path) -> None:
    info = inspect_model(_model_folder(tmp_path, "mixtral-8x7b-v0.1"))
    assert info.is_moe and info.num_experts == 8 and info.experts_per_token == 2
    # The router stays 16-bit with the embeddings and norms.
    assert info.unquantized_params > 2 * 32000 * 4096 + 32 * 4096 * 8


def test_multimodal_config_reads_the_text_model(tmp_path: Path) -> None:
    info = inspect_model(_model_folder(tmp_path, "llava-mistral-7b"))
    assert info.is_multimodal
    assert info.architecture == "LlavaForConditionalGeneration"
    assert (info.num_layers, info.num_kv_heads, info.hidden_size) == (32, 8, 4096)


def _write_tiny_checkpoint(
    folder: Path, tie: bool = False, extra_config: dict[str, object] | None = None
) -> None:
    """A two-layer Llama-shaped checkpoint in float16 (real safetensors files, random values)."""
    hidden, inter, vocab, layers, heads, kv_heads = 128, 256, 300, 2, 4, 2
    head_dim = hidden // heads
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": vocab,
        "max_position_embeddings": 512,
        "tie_word_embeddings": tie,
        "torch_dtype": "float16",
        **(extra_config or {}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)

    def weight(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float16)

    tensors = {"model.embed_tokens.weight": weight(vocab, hidden), "model.norm.weight": weight(hidden)}
    if not tie:
        tensors["lm_head.weight"] = weight(vocab, hidden)
    for layer in range(layers):
        prefix = f"model.layers.{layer}"
        tensors |= {
            f"{prefix}.self_attn.q_proj.weight": weight(hidden, hidden),
            f"{prefix}.self_attn.k_proj.weight": weight(kv_heads * head_dim, hidden),
            f"{prefix}.self_attn.v_proj.weight": weight(kv_heads * head_dim, hidden),
            f"{prefix}.self_attn.o_proj.weight": weight(hidden, hidden),
            f"{prefix}.mlp.gate_proj.weight": weight(inter, hidden),
            f"{prefix}.mlp.up_proj.weight": weight(inter, hidden),
            f"{prefix}.mlp.down_proj.weight": weight(hidden, inter),
            f"{prefix}.input_layernorm.weight": weight(hidden),
            f"{prefix}.post_attention_layernorm.weight": weight(hidden),
        }
    names = sorted(tensors)
    half = len(names) // 2
    save_file(
        {name: tensors[name] for name in names[:half]}, str(folder / "model-00001-of-00002.safetensors")
    )
    save_file(
        {name: tensors[name] for name in names[half:]}, str(folder / "model-00002-of-00002.safetensors")
    )


@pytest.mark.parametrize("tie", [False, True])
def test_headers_give_exact_counts_that_match_the_estimate(tmp_path: Path, tie: bool) -> None:
    folder = tmp_path / "tiny"
    _write_tiny_checkpoint(folder, tie=tie)
    info = inspect_model(folder)
    assert info.params_source == "safetensors"
    expected = (
        300 * 128 * (1 if tie else 2) + 128 + 2 * (2 * 128 * 128 + 2 * 64 * 128 + 3 * 128 * 256 + 2 * 128)
    )
    assert info.params == expected
    assert info.weight_bytes == 2 * expected
    assert info.dtype_params == {"F16": expected}
    assert info.tie_word_embeddings is tie
    assert info.linear_params == 2 * (2 * 128 * 128 + 2 * 64 * 128 + 3 * 128 * 256)
    assert info.linear_out_features == 2 * (128 + 64 + 64 + 128 + 256 + 256 + 128)
    # Without the weights, the architectural estimate gives the same numbers.
    for shard in folder.glob("*.safetensors"):
        shard.unlink()
    estimate = inspect_model(folder)
    assert (estimate.params, estimate.linear_params, estimate.linear_out_features) == (
        info.params,
        info.linear_params,
        info.linear_out_features,
    )


@pytest.mark.parametrize(
    ("quantization_config", "method", "recommend_as"),
    [
        (
            {
                "quant_method": "compressed-tensors",
                "format": "float-quantized",
                "config_groups": {
                    "group_0": {
                        "targets": ["Linear"],
                        "weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
                        "input_activations": {"num_bits": 8, "type": "float", "dynamic": True},
                    }
                },
            },
            "compressed-tensors",
            "fp8",
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "format": "pack-quantized",
                "config_groups": {
                    "group_0": {
                        "weights": {"num_bits": 4, "type": "int", "group_size": 128},
                        "targets": ["Linear"],
                    }
                },
            },
            "compressed-tensors",
            "w4a16",
        ),
        # Weight-only FP4: vLLM tells NVFP4A16 (group 16) from MXFP4 (group 32) by the group size
        # (compressed_tensors.py::CompressedTensorsConfig._is_nvfp4_format / _is_mxfp4).
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {
                    "group_0": {
                        "weights": {
                            "num_bits": 4,
                            "type": "float",
                            "group_size": 16,
                            "strategy": "tensor_group",
                        },
                        "targets": ["Linear"],
                    }
                },
            },
            "compressed-tensors",
            "nvfp4a16",
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {
                    "group_0": {
                        "weights": {"num_bits": 4, "type": "float", "group_size": 32, "strategy": "group"},
                        "targets": ["Linear"],
                    }
                },
            },
            "compressed-tensors",
            "mxfp4",
        ),
        ({"quant_method": "gptq", "bits": 4, "group_size": 128}, "gptq", "w4a16"),
        ({"quant_method": "awq", "bits": 4, "group_size": 128}, "awq", "w4a16"),
        ({"quant_method": "fp8", "activation_scheme": "dynamic"}, "fp8", "fp8"),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "bitsandbytes", "bnb-4bit"),
    ],
)
def test_detects_existing_quantization(
    tmp_path: Path, quantization_config: dict[str, object], method: str, recommend_as: str
) -> None:
    folder = tmp_path / "quantized"
    _write_tiny_checkpoint(folder, extra_config={"quantization_config": quantization_config})
    info = inspect_model(folder)
    assert info.quantization is not None
    assert (info.quantization.method, info.quantization.recommend_as) == (method, recommend_as)


def test_safetensors_weights_are_served_before_a_gguf_file_beside_them(tmp_path: Path) -> None:
    # vLLM given the folder loads its safetensors; a .gguf there (even a broken one) is not read.
    folder = tmp_path / "both"
    _write_tiny_checkpoint(folder)
    (folder / "model-Q4_K_M.gguf").write_bytes(b"GGUF")
    info = inspect_model(folder)
    assert info.quantization is None and info.params_source == "safetensors"


def test_detects_low_precision_tensors_without_config(tmp_path: Path) -> None:
    folder = tmp_path / "int8"
    _write_tiny_checkpoint(folder)
    save_file(
        {"model.layers.0.mlp.up_proj.weight_scale": np.ones((256, 1), np.float16)},
        str(folder / "x.safetensors"),
    )
    save_file(
        {"model.layers.9.mlp.up_proj.weight": np.ones((256, 128), np.int8)}, str(folder / "y.safetensors")
    )
    info = inspect_model(folder)
    assert info.quantization is not None and "I8" in info.quantization.scheme


def _corrupt(folder: Path) -> None:
    shard = next(folder.glob("*.safetensors"))
    shard.write_bytes(b"\xff" * 8 + b"{not json")


def _no_config(folder: Path) -> None:
    (folder / "config.json").unlink()


def _bad_json(folder: Path) -> None:
    (folder / "config.json").write_text("{broken")


def _not_llm(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"model_type": "resnet", "num_channels": 3}))


def _draft_only(folder: Path) -> None:
    # google/gemma-4-e2b-it-assistant's kind: vLLM builds it only as a --speculative-config draft.
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "gemma4_assistant"}))


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (_corrupt, "incomplete or damaged"),
        (_draft_only, "gemma4_assistant draft checkpoint, which vLLM loads only as the --speculative-config"),
        (_no_config, "no config.json"),
        (_bad_json, "not valid JSON"),
        (_not_llm, "decoder-only"),
    ],
)
def test_bad_model_folders_give_one_line_errors(tmp_path: Path, break_it: object, message: str) -> None:
    folder = tmp_path / "model"
    _write_tiny_checkpoint(folder)
    assert callable(break_it)
    break_it(folder)
    with pytest.raises(ModelError, match=message) as raised:
        inspect_model(folder)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("name", "shape", "role"),
    [
        ("model.embed_tokens.weight", [32000, 4096], "embedding"),
        ("lm_head.weight", [32000, 4096], "lm_head"),
        ("model.layers.0.self_attn.q_proj.weight", [4096, 4096], "linear"),
        ("model.layers.0.self_attn.q_proj.bias", [4096], "bias"),
        ("model.layers.0.input_layernorm.weight", [4096], "norm"),
        ("model.layers.0.block_sparse_moe.gate.weight", [8, 4096], "router"),
        ("model.layers.0.block_sparse_moe.experts.3.w1.weight", [14336, 4096], "linear"),
        ("model.layers.0.mlp.gate_proj.weight", [14336, 4096], "linear"),
        ("vision_tower.encoder.layers.0.mlp.fc1.weight", [4096, 1024], "vision"),
        # Gemma 4's vision projection and Gemma 4 Unified's patch embedder (gemma4_mm.py, gemma4_unified.py).
        ("model.embed_vision.embedding_projection.weight", [2560, 768], "vision"),
        ("model.vision_embedder.patch_dense.weight", [768, 588], "vision"),
        # Qwen3-Next: the Gated DeltaNet convolution (conv_dim 2·16·128 + 32·128 = 8192, kernel 4) and the
        # shared expert's one-row gate are built unquantized by vLLM; the projections are Linear.
        ("model.layers.0.linear_attn.conv1d.weight", [8192, 1, 4], "other"),
        ("model.layers.0.mlp.shared_expert_gate.weight", [1, 2048], "router"),
        ("model.layers.0.linear_attn.in_proj_qkvz.weight", [12288, 2048], "linear"),
        ("model.layers.0.mixer.conv1d.weight", [6448, 1, 4], "other"),  # Mamba2 (Granite-4.0-H)
    ],
)
def test_classify_tensor(name: str, shape: list[int], role: str) -> None:
    assert classify_tensor(name, shape) == role


@pytest.mark.parametrize(
    ("count", "text"), [(8_030_261_248, "8.03B"), (494_032_768, "494M"), (5_200_000, "5.2M"), (999, "999")]
)
def test_human_params(count: int, text: str) -> None:
    assert human_params(count) == text
