"""When vLLM can read a checkpoint's config only through the checkpoint's own Python: transformers' rule, vLLM's classes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.model.remote_config import remote_config_class, remote_config_file, transformers_config_types
from tests.plan.model_configs import published_config

INTERNVL_CLASS = "configuration_internvl_chat.InternVLChatConfig"
# A stand-in for transformers' table: the model types it has a config class for.
KNOWN = frozenset({"qwen2", "deepseek_v3", "llama"})
_REMOTE = {"AutoConfig": "configuration_probe.ProbeConfig", "AutoModel": "modeling_probe.ProbeModel"}

CASES: list[tuple[dict[str, Any], frozenset[str] | None, str | None]] = [
    # OpenGVLab's InternVL3-1B: internvl_chat is neither in transformers nor among vLLM's classes.
    (published_config("internvl3-1b"), KNOWN, INTERNVL_CLASS),
    # DeepSeek-V3 ships configuration_deepseek.py, but transformers has deepseek_v3 and prefers its own.
    (published_config("deepseek-v3"), KNOWN, None),
    # Kimi-K2 names DeepSeek's remote class too; vLLM registers its DeepseekV3Config for kimi_k2 first.
    ({"model_type": "kimi_k2", "auto_map": _REMOTE}, KNOWN, None),
    ({"model_type": "probe", "auto_map": _REMOTE}, KNOWN, "configuration_probe.ProbeConfig"),
    # No AutoConfig in auto_map: transformers runs no configuration file (and would refuse the type anyway).
    ({"model_type": "probe", "auto_map": {"AutoModel": "modeling_probe.ProbeModel"}}, KNOWN, None),
    ({"model_type": "probe"}, KNOWN, None),
    # Without transformers nothing can be said.
    ({"model_type": "probe", "auto_map": _REMOTE}, None, None),
]


@pytest.mark.parametrize(("config", "known", "expected"), CASES)
def test_remote_config_class(
    config: dict[str, Any], known: frozenset[str] | None, expected: str | None
) -> None:
    assert remote_config_class(config, lambda: known) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("internvl3-1b", INTERNVL_CLASS),
        ("deepseek-v3", None),
        ("nemotron-h-8b-base-8k", None),
        ("qwen3-8b", None),
    ],
)
def test_with_the_installed_transformers(name: str, expected: str | None) -> None:
    """transformers 5 has nemotron_h and deepseek_v3 classes of its own, not internvl_chat."""
    assert remote_config_class(published_config(name)) == expected


def test_transformers_is_asked_only_for_a_config_with_an_auto_config() -> None:
    def must_not_be_called() -> frozenset[str]:
        raise AssertionError("transformers was imported for a config without auto_map")

    assert remote_config_class(published_config("qwen3-8b"), must_not_be_called) is None


@pytest.mark.parametrize(
    ("reference", "file"),
    [
        (INTERNVL_CLASS, "configuration_internvl_chat.py"),
        ("configs.probe.ProbeConfig", "configs/probe.py"),
        (
            "OpenGVLab/InternVL3-1B--configuration_internvl_chat.InternVLChatConfig",
            None,
        ),  # another repo's file
    ],
)
def test_remote_config_file(reference: str, file: str | None) -> None:
    assert remote_config_file(reference) == file


# vLLM's own config parser on a folder whose config class is its own Python file: refused without
# trust_remote_code and loaded with it; a known model type with the same auto_map loads transformers' class
# without it (and the folder's class with it: the flag would swap DeepSeek-V3's config for its shipped one).
_PARSE = """
import json, sys
from vllm.transformers_utils.config import HFConfigParser
outcomes = []
for folder in sys.argv[1:]:
    for trust in (False, True):
        try:
            _, config = HFConfigParser().parse(folder, trust_remote_code=trust)
            outcomes.append(type(config).__name__)
        except (RuntimeError, ValueError) as error:  # vLLM's RuntimeError, or transformers 5's own ValueError
            refused = "trust-remote-code" in str(error) or "trust_remote_code=True" in str(error)
            outcomes.append("refused" if refused else repr(error))
print(json.dumps(outcomes))
"""
_PROBE_CLASS = """
from transformers import PretrainedConfig


class ProbeConfig(PretrainedConfig):
    model_type = "probe"
"""


def test_vllm_needs_trust_remote_code_exactly_then(tmp_path: Path) -> None:
    folders = []
    for model_type in ("probe", "llama"):
        folder = tmp_path / model_type
        folder.mkdir()
        config = {"model_type": model_type, "architectures": ["LlamaForCausalLM"], "auto_map": _REMOTE}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "configuration_probe.py").write_text(_PROBE_CLASS)
        folders.append(str(folder))
        assert (remote_config_class(config) is not None) is (model_type == "probe")
    env = os.environ | {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _PARSE, *folders],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        "refused",
        "ProbeConfig",
        "LlamaConfig",
        "ProbeConfig",
    ]


def test_transformers_config_types_has_the_common_ones() -> None:
    known = transformers_config_types()
    assert known is not None
    assert {"llama", "qwen2", "deepseek_v3"} <= known
    assert "internvl_chat" not in known
