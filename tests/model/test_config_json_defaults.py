"""A config section read over its config class's defaults (config_json.with_defaults, int_fields)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.model.config_json import int_fields, with_defaults

DEFAULTS = {"hidden_size": 768, "patch_size": 14}

WITH_DEFAULTS = [
    ({}, {"hidden_size": 768, "patch_size": 14}),
    ({"hidden_size": 1024}, {"hidden_size": 1024, "patch_size": 14}),
    # None is "not set": the class's default stands; keys the defaults do not name are kept.
    (
        {"hidden_size": None, "norm_type": "rms_norm"},
        {"hidden_size": 768, "patch_size": 14, "norm_type": "rms_norm"},
    ),
]


@pytest.mark.parametrize(("section", "expected"), WITH_DEFAULTS)
def test_with_defaults(section: dict[str, Any], expected: dict[str, Any]) -> None:
    assert with_defaults(section, DEFAULTS) == expected


INT_FIELDS = [
    ({}, {"hidden_size": 768, "patch_size": 14}),
    # Only the named fields, as integers; None takes the default.
    (
        {"hidden_size": 1408.0, "patch_size": None, "model_type": "llama4_vision_model"},
        {"hidden_size": 1408, "patch_size": 14},
    ),
]


@pytest.mark.parametrize(("section", "expected"), INT_FIELDS)
def test_int_fields(section: dict[str, Any], expected: dict[str, int]) -> None:
    assert int_fields(section, DEFAULTS) == expected
