"""The llm-compressor worker's renaming of linearized MoE experts back to the source checkpoint's names, and its ignore list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from engine.quantize.llmcompressor_worker import (
    ignored_modules,
    list_kept_layers,
    original_module_names,
    restore_source_names,
)


class Expert(torch.nn.Module):
    """One expert as llm-compressor's linearized load makes it (gate/up/down Linear layers)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate_proj = torch.nn.Linear(8, 4, bias=False)
        self.up_proj = torch.nn.Linear(8, 4, bias=False)
        self.down_proj = torch.nn.Linear(4, 8, bias=False)


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.experts = torch.nn.ModuleList([Expert(), Expert()])
        self.gate = torch.nn.Linear(8, 2, bias=False)


def _source(folder: Path, block: Block) -> Path:
    """A Mixtral-style checkpoint of ``block``: experts named w1 (gate), w3 (up), w2 (down)."""
    folder.mkdir()
    tensors = {"gate.weight": block.gate.weight.detach().clone()}
    for index, expert in enumerate(block.experts):
        for theirs, ours in (("w1", expert.gate_proj), ("w3", expert.up_proj), ("w2", expert.down_proj)):
            tensors[f"experts.{index}.{theirs}.weight"] = ours.weight.detach().clone()
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def test_linearized_experts_are_matched_to_the_source_weight_they_were_loaded_from(tmp_path: Path) -> None:
    torch.manual_seed(0)
    block = Block()
    renames = original_module_names(block, _source(tmp_path / "source", block))
    assert renames == {
        f"experts.{i}.{ours}": f"experts.{i}.{theirs}"
        for i in range(2)
        for ours, theirs in (("gate_proj", "w1"), ("up_proj", "w3"), ("down_proj", "w2"))
    }


def test_same_named_layers_and_ambiguous_matches_are_left_alone(tmp_path: Path) -> None:
    block = Block()
    with torch.no_grad():
        for expert in block.experts:
            expert.gate_proj.weight.zero_()
            expert.up_proj.weight.zero_()  # w1 and w3 now have the same first row: no way to tell
    renames = original_module_names(block, _source(tmp_path / "source", block))
    assert "gate" not in renames
    assert sorted(renames) == ["experts.0.down_proj", "experts.1.down_proj"]


def test_saved_tensors_index_and_config_take_the_source_names(tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    packed = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    save_file(
        {
            "experts.0.gate_proj.weight_packed": packed,
            "experts.0.gate_proj.weight_scale": torch.ones(2, 1),
            "gate.weight": torch.zeros(2, 8),
        },
        str(output / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (output / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"experts.0.gate_proj.weight_packed": "model.safetensors"}})
    )
    quantization = {
        "ignore": ["gate", "experts.0.gate_proj"],
        "config_groups": {"g": {"targets": ["Linear"]}},
    }
    (output / "config.json").write_text(json.dumps({"quantization_config": quantization}))

    restore_source_names(output, {"experts.0.gate_proj": "experts.0.w1"})

    with safe_open(output / "model.safetensors", "pt") as reader:
        assert sorted(reader.keys()) == [
            "experts.0.w1.weight_packed",
            "experts.0.w1.weight_scale",
            "gate.weight",
        ]
        assert torch.equal(reader.get_tensor("experts.0.w1.weight_packed"), packed)
        assert reader.metadata() == {"format": "pt"}
    index = json.loads((output / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {"experts.0.w1.weight_packed": "model.safetensors"}
    config = json.loads((output / "config.json").read_text())["quantization_config"]
    assert config["ignore"] == ["gate", "experts.0.w1"]
    assert config["config_groups"]["g"]["targets"] == ["Linear"]
    assert [path.name for path in output.iterdir() if path.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("kept", "renames", "expected"),
    [
        # The plan's names are checkpoint names; the recipe needs the names in memory.
        (["lm_head", "gate"], {}, ["lm_head", "gate"]),
        # A module saved under another name is found by the source name it is saved back under.
        (["experts.1.w2"], {"experts.1.down_proj": "experts.1.w2"}, ["lm_head", "experts.1.down_proj"]),
        # A kept name the loaded model has no Linear for (a conv1d, a router that is no nn.Linear).
        (["mamba.conv1d"], {}, ["lm_head"]),
        ([], {}, ["lm_head"]),
    ],
)
def test_the_plan_s_kept_layers_become_the_recipe_s_ignore_list(
    kept: list[str], renames: dict[str, str], expected: list[str]
) -> None:
    assert ignored_modules(Block(), kept, renames) == expected


def test_kept_layers_without_a_linear_in_memory_join_the_saved_ignore_list(tmp_path: Path) -> None:
    quantization = {"ignore": ["lm_head", "model.layers.0.mamba.in_proj"], "format": "pack-quantized"}
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": quantization}))
    list_kept_layers(tmp_path, ["lm_head", "model.layers.0.mamba.in_proj", "model.layers.0.mamba.conv1d"])
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved == {
        "ignore": ["lm_head", "model.layers.0.mamba.in_proj", "model.layers.0.mamba.conv1d"],
        "format": "pack-quantized",
    }
