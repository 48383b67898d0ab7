"""Config-only sizes of pre-quantized checkpoints, against sizes worked out by hand from the format's own rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.plan.model_configs import model_from_config

# The quantization_config transformers' BitsAndBytesConfig.to_dict writes (unsloth's
# Meta-Llama-3.1-8B-Instruct-bnb-4bit carries this one, double quantization on).
BNB_NF4_DOUBLE: dict[str, Any] = {
    "_load_in_4bit": True,
    "_load_in_8bit": False,
    "bnb_4bit_compute_dtype": "bfloat16",
    "bnb_4bit_quant_storage": "uint8",
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": True,
    "llm_int8_enable_fp32_cpu_offload": False,
    "llm_int8_has_fp16_weight": False,
    "llm_int8_skip_modules": None,
    "llm_int8_threshold": 6.0,
    "load_in_4bit": True,
    "load_in_8bit": False,
    "quant_method": "bitsandbytes",
}

# Llama-3.1-8B by hand: 224 Linear weights (32 layers x q, k, v, o, gate, up, down), 6,979,321,856 values
# at 4 bits = 3,489,660,928 B, one absmax per 64 = 109,051,904 of them; bf16 embed_tokens, lm_head and
# 65 norms = 2,101,878,784 B. Double quantization: the absmax in uint8 (109,051,904 B), an fp32 per 256
# of them (1,703,936 B), 224 x (64 B NF4 map + 1,024 B nested map) = 243,712 B. Without it: fp32 absmax
# 436,207,616 B and 224 x 64 B maps = 14,336 B.
CASES = [
    (BNB_NF4_DOUBLE, 3_489_660_928 + 109_051_904 + 1_703_936 + 243_712 + 2_101_878_784),
    (
        {**BNB_NF4_DOUBLE, "bnb_4bit_use_double_quant": False},
        3_489_660_928 + 436_207_616 + 14_336 + 2_101_878_784,
    ),
    # LLM.int8: int8 values and an fp32 SCB per output row (43,008 rows a layer).
    (
        {**BNB_NF4_DOUBLE, "load_in_4bit": False, "_load_in_4bit": False, "load_in_8bit": True},
        6_979_321_856 + 32 * 43_008 * 4 + 2_101_878_784,
    ),
]


@pytest.mark.parametrize(("quantization_config", "expected"), CASES)
def test_bitsandbytes_checkpoint_bytes(
    quantization_config: dict[str, Any], expected: int, tmp_path: Path
) -> None:
    model = model_from_config(tmp_path, "llama-3.1-8b", {"quantization_config": quantization_config})
    assert model.loaded_weight_bytes == expected


def test_double_quantization_is_within_the_issue_bar_of_the_published_size(tmp_path: Path) -> None:
    # unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit: the Hub lists model.safetensors at 5.7 GB.
    model = model_from_config(tmp_path, "llama-3.1-8b", {"quantization_config": BNB_NF4_DOUBLE})
    assert model.loaded_weight_bytes == pytest.approx(5.7e9, rel=0.03)
