"""GLM-4-MoE (GLM-4.5-Air) parameters config-only, worked by hand from vLLM's glm4_moe.py and glm4_moe_mtp.py.

vLLM 0.32: Glm4MoeAttention (QKVParallelLinear with ``bias=attention_bias``, o_proj without bias,
q_norm / k_norm only when ``use_qk_norm``), Glm4MoeDecoderLayer (MoE when ``layer_idx >=
first_k_dense_replace``, else a dense Glm4MoeMLP of ``intermediate_size``), Glm4MoE (router
``GateLinear`` h × experts plus an ``e_score_correction_bias`` of one float per expert, always; shared
experts ``n_shared_experts · moe_intermediate_size`` wide) and Glm4MoeMultiTokenPredictorLayer
(enorm, hnorm, eh_proj 2h → h, shared_head norm + head, one Glm4MoeDecoderLayer built at index
``num_hidden_layers``, so MoE; the predictor's embed_tokens). Plain serving drops the MTP layer
(``skip_spec_layers``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.model.architecture import read_architecture
from engine.model.inspect_model import inspect_model
from engine.model.param_count import active_params, estimate_params

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"

# GLM-4.5-Air, h 4096, 96 heads × 128 = 12,288, 8 KV heads × 128 = 1,024:
# attention q 4096·12,288 = 50,331,648 + k, v 2·4096·1024 = 8,388,608 + o 12,288·4096 = 50,331,648
#   = 109,051,904, + q/k/v biases 12,288 + 2·1024 = 14,336 (o_proj has none): 109,066,240.
ATTENTION = 109_066_240
# Two RMSNorms per layer: 8,192.
NORMS = 8_192
# Layer 0 (first_k_dense_replace 1): MLP 3·4096·10,944 = 134,479,872.
DENSE_MLP = 134_479_872
# Layers 1-45: experts 128·3·4096·1408 = 2,214,592,512 + shared expert 3·4096·1408 = 17,301,504
#   + router 128·4096 = 524,288 + e_score_correction_bias 128 = 2,232,418,432.
ROUTED = 2_214_592_512
MOE = ROUTED + 17_301_504 + 524_288 + 128
DENSE_LAYER = ATTENTION + DENSE_MLP + NORMS  # 243,554,304
MOE_LAYER = ATTENTION + MOE + NORMS  # 2,341,492,864
# embed_tokens + lm_head (untied) 2·151,552·4096 = 1,241,513,984; final norm 4,096.
VOCAB = 1_241_513_984
TOTAL = DENSE_LAYER + 45 * MOE_LAYER + VOCAB + 4_096  # 106,852,251,264
# Routed experts a token skips: 120 of 128 in 45 layers = 45 · 2,214,592,512 · 120 / 128.
ACTIVE = TOTAL - 45 * ROUTED * 120 // 128  # 13,424,129,664
# MTP layer 46: enorm + hnorm 8,192 + eh_proj 8192·4096 = 33,554,432 + shared_head.norm 4,096 + one
# MoE decoder layer 2,341,492,864 + the embed_tokens / shared_head.head copies GLM-4.5's checkpoint
# stores (vLLM allocates both for the drafter; load_weights also maps model.embed_tokens / lm_head
# into them for checkpoints without copies, as llama.cpp found GLM-4.6's to be): 1,241,513,984.
MTP = 8_192 + 33_554_432 + 4_096 + MOE_LAYER + VOCAB  # 3,616,573,568


def _config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((CONFIGS / "glm-4.5-air.json").read_text())
    return config | overrides


def test_glm_4_5_air_by_hand() -> None:
    arch = read_architecture(_config(), CONFIGS)
    counts = estimate_params(arch)
    assert (counts.total, counts.mtp, active_params(arch)) == (TOTAL, MTP, ACTIVE)
    assert arch.moe is not None and arch.moe.moe_layers == tuple(range(1, 46))
    assert arch.attention.mtp_layers == 1
    assert not arch.qk_norm


def test_glm_4_5_air_matches_the_model_card(tmp_path: Path) -> None:
    # Model card: 106B total, 12B active. 106.85B loaded (MTP apart) is within 1% of 106B; the active
    # figure leaves out the vocabulary matrices: 13.42B - 1.24B = 12.18B.
    (tmp_path / "config.json").write_text(json.dumps(_config()))
    model = inspect_model(tmp_path)
    assert model.params == pytest.approx(106e9, rel=0.01)
    assert model.active_params - VOCAB == pytest.approx(12e9, rel=0.02)
    assert model.mtp_params == MTP
    assert model.attention_summary == "GQA 8 KV heads × 128 × 46 layers (+1 MTP, not loaded)"


# overrides, loaded parameters, MTP parameters
CASES = [
    ({"num_nextn_predict_layers": 0}, TOTAL, 0),  # no MTP: the served model is the same
    ({"num_nextn_predict_layers": 2}, TOTAL, 2 * MTP),
    # GLM-4.5 style q_norm / k_norm (RMSNorm over head_dim 128 each) in every layer and the MTP's.
    ({"use_qk_norm": True}, TOTAL + 46 * 256, MTP + 256),
    # attention_bias false: no q/k/v biases.
    ({"attention_bias": False}, TOTAL - 46 * 14_336, MTP - 14_336),
]


@pytest.mark.parametrize(("overrides", "total", "mtp"), CASES)
def test_glm4_moe_variants(overrides: dict[str, Any], total: int, mtp: int) -> None:
    counts = estimate_params(read_architecture(_config(**overrides), CONFIGS))
    assert (counts.total, counts.mtp) == (total, mtp)
