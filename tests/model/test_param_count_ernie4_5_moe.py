"""ERNIE-4.5's MoE models (``ernie4_5_moe``) config-only, worked by hand from vLLM's ernie45_moe.py and ernie_mtp.py.

vLLM 0.32: a layer ``i`` is MoE when ``(i + 1) % moe_layer_interval == 0`` and ``moe_layer_start_index <= i <=
moe_layer_end_index`` (Ernie4_5_MoeConfig's -1 is the last layer), else a dense MLP of ``intermediate_size``;
Ernie4_5_MoeMoE has a router h × experts, an ``e_score_correction_bias`` of one float per expert (always), and
shared experts ``moe_num_shared_experts · moe_intermediate_size`` wide; ``moe_k`` experts a token. The MTP layer
(ErnieMultiTokenPredictorLayer: mtp_emb_norm, mtp_hidden_norm, mtp_linear_proj 2h → h and a dense
LlamaDecoderLayer; embedding and head shared) is dropped for plain serving.

No published config.json of the MoE models was at hand: the configs below are built from the sizes that several
ports' copies agree on (Huawei MindIE's and mlx-swift's test configs, and Ernie4_5_MoeConfig's defaults, which are
ERNIE-4.5-21B-A3B's); the 300B's untied embeddings follow FastDeploy's copy of its config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from engine.model.architecture import read_architecture
from engine.model.inspect_model import inspect_model
from engine.model.param_count import estimate_params

ERNIE_21B: dict[str, Any] = {
    "architectures": ["Ernie4_5_MoeForCausalLM"],
    "model_type": "ernie4_5_moe",
    "hidden_size": 2560,
    "intermediate_size": 12288,
    "num_hidden_layers": 28,
    "num_attention_heads": 20,
    "num_key_value_heads": 4,
    "vocab_size": 103424,
    "use_bias": False,
    "moe_num_experts": 64,
    "moe_k": 6,
    "moe_intermediate_size": 1536,
    "moe_num_shared_experts": 2,
    "moe_layer_start_index": 1,
    "moe_layer_end_index": 27,
    "moe_layer_interval": 1,
    "tie_word_embeddings": True,
    "num_nextn_predict_layers": 1,
}
ERNIE_300B: dict[str, Any] = {
    **ERNIE_21B,
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 54,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "moe_k": 8,
    "moe_intermediate_size": 3584,
    "moe_num_shared_experts": 0,
    "moe_layer_start_index": 3,
    "moe_layer_end_index": 53,
    "tie_word_embeddings": False,
}
# The test's own: MoE layers 1 and 2 of 4, one shared expert; the keys Ernie4_5_MoeConfig defaults left out.
TINY: dict[str, Any] = {
    "architectures": ["Ernie4_5_MoeForCausalLM"],
    "model_type": "ernie4_5_moe",
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
    "moe_num_experts": 4,
    "moe_k": 2,
    "moe_intermediate_size": 32,
    "moe_num_shared_experts": 1,
    "moe_layer_end_index": 2,
    "tie_word_embeddings": False,
}

# config, MoE layers, experts a token, parameters served, MTP parameters
CASES = [
    # 21B-A3B, h 2560, 20 heads × 128, 4 KV heads × 128: attention 2 · 2560² + 2 · 2560 · 512 = 15,728,640 and two
    # norms 5,120 in 28 layers: 440,545,280. Layer 0 dense: 3 · 2560 · 12,288 = 94,371,840. Layers 1-27: experts
    # 64 · 3 · 2560 · 1536 = 754,974,720 + shared 3 · 2560 · 3072 = 23,592,960 + router 163,840 + bias 64 =
    # 778,731,584, × 27 = 21,025,752,768. Tied embedding 103,424 · 2560 = 264,765,440, final norm 2560.
    # 21,825,437,888 (the card: 21B total). MTP: 2 · 2560² + 2 · 2560 = 13,112,320 + a dense layer 15,728,640 +
    # 94,371,840 + 5,120 = 123,217,920.
    (ERNIE_21B, tuple(range(1, 28)), 6, 21_825_437_888, 123_217_920),
    # 300B-A47B, h 8192, 64 heads × 128, 8 KV × 128: attention 2 · 8192² + 2 · 8192 · 1024 = 150,994,944, norms
    # 16,384: × 54 = 8,154,611,712. Layers 0-2 dense: 3 · 3 · 8192 · 28,672 = 2,113,929,216. Layers 3-53: 64 · 3 ·
    # 8192 · 3584 = 5,637,144,576 + router 524,288 + bias 64 = 5,637,668,928, × 51 = 287,521,115,328. Untied 2 ·
    # 103,424 · 8192 = 1,694,498,816, norm 8192. 299,484,163,264 (the card: 300B total). MTP 2 · 8192² + 2 · 8192
    # = 134,234,112 + 150,994,944 + 3 · 8192 · 28,672 + 16,384 = 989,888,512.
    (ERNIE_300B, tuple(range(3, 54)), 8, 299_484_163_264, 989_888_512),
    # Tiny: attention 64² + 2 · 64 · 32 + 64² = 12,288 + norms 128, × 4 = 49,664; layers 0 and 3 dense 2 · 3 · 64 ·
    # 96 = 36,864; layers 1-2: 4 · 3 · 64 · 32 + 3 · 64 · 32 + 4 · 64 + 4 = 30,980, × 2 = 61,960; untied 2 · 128 ·
    # 64 = 16,384, norm 64. 164,936 (transformers' Ernie4_5_MoeForCausalLM of this config holds the same).
    (TINY, (1, 2), 2, 164_936, 0),
]


@pytest.mark.parametrize(("config", "moe_layers", "per_token", "params", "mtp"), CASES)
def test_parameters_config_only(
    config: dict[str, Any], moe_layers: tuple[int, ...], per_token: int, params: int, mtp: int
) -> None:
    arch = read_architecture(config, Path("."))
    assert arch.moe is not None
    assert (arch.moe.moe_layers, arch.moe.experts_per_token) == (moe_layers, per_token)
    counts = estimate_params(arch)
    assert (counts.total, counts.mtp) == (params, mtp)


def test_use_moe_false_is_dense() -> None:
    """Ernie4_5_MoeDecoderLayer builds no MoE layer with ``use_moe`` false: 4 dense layers of 12,288 + 128 +
    18,432, 16,384 + 64 for the vocabulary and final norm: 139,840."""
    arch = read_architecture({**TINY, "use_moe": False}, Path("."))
    assert arch.moe is None
    assert estimate_params(arch).total == 139_840


def test_headers_leave_the_mtp_tensors_out(tmp_path: Path) -> None:
    """A checkpoint with TINY's served tensors (as transformers saves Ernie4_5_MoeForCausalLM) and ERNIE's
    ``model.mtp_*`` tensors: the served count is the config-only one, and the MTP tensors are counted apart."""
    h, inner, experts, width = 64, 96, 4, 32
    tensors: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (128, h),
        "lm_head.weight": (128, h),
        "model.norm.weight": (h,),
    }
    attention = {"q_proj": (h, h), "k_proj": (32, h), "v_proj": (32, h), "o_proj": (h, h)}
    dense = {"gate_proj": (inner, h), "up_proj": (inner, h), "down_proj": (h, inner)}
    for layer in range(4):
        prefix = f"model.layers.{layer}."
        tensors |= {f"{prefix}self_attn.{name}.weight": shape for name, shape in attention.items()}
        tensors |= {
            f"{prefix}{norm}.weight": (h,) for norm in ("input_layernorm", "post_attention_layernorm")
        }
        if layer in (0, 3):
            tensors |= {f"{prefix}mlp.{name}.weight": shape for name, shape in dense.items()}
            continue
        tensors[f"{prefix}mlp.gate.weight"] = (experts, h)
        tensors[f"{prefix}mlp.moe_statics.e_score_correction_bias"] = (1, experts)
        shared = {"gate_proj": (width, h), "up_proj": (width, h), "down_proj": (h, width)}
        tensors |= {f"{prefix}mlp.shared_experts.{name}.weight": shape for name, shape in shared.items()}
        for expert in range(experts):
            tensors |= {
                f"{prefix}mlp.experts.{expert}.{name}.weight": shape for name, shape in shared.items()
            }
    # One MTP layer: 2 · 64 (norms) + 128 · 64 (linear_proj) + a dense layer 12,288 + 18,432 + 128 = 39,168.
    mtp = {"model.mtp_emb_norm.0.weight": (h,), "model.mtp_hidden_norm.0.weight": (h,)}
    mtp["model.mtp_linear_proj.0.weight"] = (h, 2 * h)
    mtp |= {f"model.mtp_block.0.self_attn.{name}.weight": shape for name, shape in attention.items()}
    mtp |= {f"model.mtp_block.0.mlp.{name}.weight": shape for name, shape in dense.items()}
    mtp |= {
        f"model.mtp_block.0.{norm}.weight": (h,) for norm in ("input_layernorm", "post_attention_layernorm")
    }
    tensors |= mtp
    save_file(
        {name: np.zeros(shape, np.float16) for name, shape in tensors.items()},
        str(tmp_path / "model.safetensors"),
    )
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "num_nextn_predict_layers": 1}))
    model = inspect_model(tmp_path)
    assert (model.params, model.mtp_params) == (164_936, 39_168)
    assert estimate_params(read_architecture({**TINY, "num_nextn_predict_layers": 1}, tmp_path)).mtp == 39_168
