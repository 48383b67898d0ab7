"""A model whose config vLLM reads only through the checkpoint's own class is planned with --trust-remote-code, and says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.hardware.detect import target_from_spec
from engine.plan.recommender import PlanRequest, recommend
from tests.plan.model_configs import model_from_config
from tui.cli import main

WARNING = (
    "vLLM reads this model's config only through its own class configuration_internvl_chat.InternVLChatConfig: "
    "the command passes --trust-remote-code, which runs configuration_internvl_chat.py in the model folder; "
    "read it before you serve"
)


@pytest.mark.parametrize(
    ("name", "trusted"), [("internvl3-1b", True), ("deepseek-v3", False), ("qwen3-8b", False)]
)
def test_every_candidate_is_planned_with_the_flag_only_when_needed(
    tmp_path: Path, name: str, trusted: bool
) -> None:
    model = model_from_config(tmp_path, name)
    (tmp_path / "configuration_internvl_chat.py").write_text("# the checkpoint's class\n")
    candidates = recommend(model, target_from_spec("H200x8"), PlanRequest(max_model_len=4096)).candidates
    for candidate in candidates:
        assert ("--trust-remote-code" in candidate.server.vllm_args()) is trusted
        assert [w for w in candidate.warnings if "trust-remote-code" in w] == ([WARNING] if trusted else [])


def test_a_missing_class_file_is_said(tmp_path: Path) -> None:
    model = model_from_config(tmp_path, "internvl3-1b")
    best = recommend(model, target_from_spec("H100"), PlanRequest(max_model_len=4096)).best
    assert (
        f"{WARNING} (configuration_internvl_chat.py is not in {tmp_path}: copy the checkpoint's .py files"
        in (" ".join(best.warnings))
    )


def test_serve_starts_what_recommend_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_from_config(tmp_path, "internvl3-1b")
    assert main(["recommend", "--model", str(tmp_path), "--json"]) == 0
    recommended = json.loads(capsys.readouterr().out)
    as_is = next(c for c in recommended["candidates"] if not c["needs_quantization"])
    assert main(["serve", "--model", str(tmp_path), "--dry-run", "--json"]) == 0
    served = json.loads(capsys.readouterr().out)
    assert served["vllm_args"] == as_is["vllm_args"]
    assert served["vllm_args"][-1] == "--trust-remote-code"
