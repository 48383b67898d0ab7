"""Capability limits probed from the installed vLLM, cached per version, and used for this machine's GPUs only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.hardware.detect import HardwareTarget, target_from_spec
from engine.hardware.gpu_catalog import find_gpu
from engine.plan.installed_vllm import (
    VllmLimits,
    cache_path,
    installed_limits,
    installed_vllm_version,
    read_cached,
)
from engine.plan.method_choice import execution_for
from engine.plan.recommender import PlanRequest, recommend
from tests.plan.model_configs import model_from_config

# What vLLM 0.32.0's classes report (read in its source: "lovelace and up" 89 for FP8 W8A8, Marlin's 75,
# MXFP4 Marlin 80), the figures the probe of the installed vLLM must give.
VLLM_032_LIMITS = {
    "CompressedTensorsW8A8Fp8": 89,
    "CompressedTensorsW8A16Fp8": 75,
    "CompressedTensorsW8A8Int8": 75,
    "CompressedTensorsWNA16": 75,
    "CompressedTensorsW4A4Fp4": 75,
    "Mxfp4Config": 80,
    "ModelOptFp8Config": 80,  # modelopt.py::ModelOptFp8Config.get_min_capability
}
# A made-up vLLM that raised FP8 W8A8 to Hopper, MXFP4 to Hopper, Marlin FP8 (W8A16) to Ampere and ModelOpt
# FP8 to Ada: the plan must follow it.
RAISED = VllmLimits(
    "9.9.9",
    {
        "CompressedTensorsW8A8Fp8": 90,
        "Mxfp4Config": 90,
        "CompressedTensorsW8A16Fp8": 80,
        "ModelOptFp8Config": 89,
    },
)


@pytest.mark.parametrize(
    ("gpu", "method", "bundled", "raised"),
    [
        ("L4", "fp8", "w8a8", "weight-only"),  # 8.9 < 90: FP8 Marlin (75) instead
        ("H100", "fp8", "w8a8", "w8a8"),
        ("A100-80GB", "mxfp4", "weight-only", None),  # 8.0 < 90
        ("H100", "mxfp4", "weight-only", "weight-only"),
        ("T4", "int8-w8a8", "w8a8", "w8a8"),  # not probed differently: the bundled 75 stays
        # FP8 on Turing is CompressedTensorsW8A16Fp8 (Marlin FP8) for both FP8 methods: 7.5 < 80.
        ("T4", "fp8", "weight-only", None),
        ("T4", "fp8-w8a16", "weight-only", None),
        ("A100-80GB", "fp8-w8a16", "weight-only", "weight-only"),
        ("H100", "fp8-w8a16", "weight-only", "weight-only"),  # never W8A8, whatever vLLM reports
        ("T4", "modelopt-fp8", None, None),  # ModelOptFp8Config's 80
        ("A100-80GB", "modelopt-fp8", "weight-only", None),  # 8.0 < 89
        ("L4", "modelopt-fp8", "w8a8", "w8a8"),
    ],
)
def test_probed_limits_replace_the_bundled_ones(
    gpu: str, method: str, bundled: str, raised: str | None
) -> None:
    target = target_from_spec(gpu)
    assert execution_for(method, target) == bundled
    assert execution_for(method, target, RAISED) == raised


def test_every_probed_class_a_method_names_updates_its_capability() -> None:
    """A method whose capability comes from a probed class's get_min_capability follows the probe.

    Each registry method names its vLLM classes in ``capability.vllm_source`` (vllm_facts); when one of
    them is probed, LIMITS must map it onto that very record, or the probe would leave it on the bundled
    figure (as fp8-w8a16's CT_FP8_W8A16 was left at first).
    """
    from engine.plan.installed_vllm import LIMITS, PROBED
    from engine.plan.methods import METHODS

    unmapped = [
        (record.name, name)
        for record in METHODS
        for name in record.capability.vllm_source.split(" / ")
        if name in PROBED
        and not any(cap is record.capability and probed == name for cap, _, probed in LIMITS)
    ]
    assert unmapped == []


def _write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("data", "read"),
    [
        ({"version": "0.33.0", "min_capability": {"Mxfp4Config": 80}}, {"Mxfp4Config": 80}),
        ({"version": "0.32.0", "min_capability": {"Mxfp4Config": 80}}, None),  # another version
        ({"version": "0.33.0", "min_capability": {"Mxfp4Config": "80"}}, None),
        ({"version": "0.33.0"}, None),
        ([1, 2], None),
    ],
)
def test_read_cached(tmp_path: Path, data: object, read: dict[str, int] | None) -> None:
    limits = read_cached(_write(tmp_path / "limits.json", data), "0.33.0")
    assert (limits.min_capability if limits else None) == read


def test_a_detected_gpu_plans_with_the_cached_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a cached probe for the installed vLLM, a plan for this machine's L4 follows it; a catalogue L4 does not."""
    version = installed_vllm_version()
    assert version is not None
    monkeypatch.setenv("QUANT_TUI_CACHE", str(tmp_path / "cache"))
    _write(cache_path(version), {"version": version, "min_capability": RAISED.min_capability})
    model = model_from_config(tmp_path / "llama", "llama-3.1-8b")
    l4 = find_gpu("L4")
    detected = HardwareTarget("gpu", "NVIDIA L4", 1, l4.memory_bytes, (8, 9), "detected", l4)
    request = PlanRequest(max_model_len=4096, calibration_file=tmp_path / "none.json")
    here = recommend(model, detected, request)
    assert f"capability limits from the installed vLLM {version}'s own checks" in here.notes
    assert {c.method: c.execution for c in here.candidates}["fp8"] == "weight-only"
    elsewhere = recommend(model, target_from_spec("L4"), request)
    assert {c.method: c.execution for c in elsewhere.candidates}["fp8"] == "w8a8"
    assert not any("installed vLLM" in note for note in elsewhere.notes)


@pytest.mark.e2e
def test_probe_of_the_installed_vllm_is_cached(tmp_path: Path) -> None:
    """The real probe (a child process importing vLLM) gives vLLM 0.32's figures and writes the cache once."""
    cache_file = tmp_path / "limits.json"
    limits = installed_limits(cache_file)
    assert limits is not None and limits.min_capability == VLLM_032_LIMITS
    assert json.loads(cache_file.read_text())["min_capability"] == VLLM_032_LIMITS
    _write(cache_file, {"version": limits.version, "min_capability": {"Mxfp4Config": 99}})
    assert installed_limits(cache_file) == VllmLimits(limits.version, {"Mxfp4Config": 99})  # read, not probed
