"""The published model configs of tests/fixtures/configs (listed in its README), written into a folder as a config-only checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.model.inspect_model import ModelInfo

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"


def published_config(name: str) -> dict[str, Any]:
    """The config.json of ``name`` (``llama-3.1-8b``, ``deepseek-v3``, ...) as its model card's repository holds it."""
    config: dict[str, Any] = json.loads((CONFIGS / f"{name}.json").read_text())
    return config


def write_config(
    folder: Path,
    name: str,
    changes: dict[str, Any] | None = None,
    text_changes: dict[str, Any] | None = None,
) -> Path:
    """Writes ``name``'s config into ``folder`` (made if missing) as its ``config.json``; returns ``folder``.

    Args:
        folder: the checkpoint folder.
        name: the config's file name in tests/fixtures/configs, without ``.json``.
        changes: keys to set at the top level.
        text_changes: keys to set in the text model's config (``text_config`` where there is one).
    """
    config = published_config(name)
    config.update(changes or {})
    (config.get("text_config") or config).update(text_changes or {})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def model_from_config(
    folder: Path,
    name: str,
    changes: dict[str, Any] | None = None,
    text_changes: dict[str, Any] | None = None,
) -> ModelInfo:
    """``name``'s config written into ``folder`` (see ``write_config``), read as quant-tui reads a checkpoint."""
    from engine.model.inspect_model import inspect_model

    return inspect_model(write_config(folder, name, changes, text_changes))


# A Llama decoder layer's Linears as ModelOpt names them: model.layers.{i}.self_attn.q_proj, ... mlp.down_proj.
_LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj"), ("gate_proj", "up_proj", "down_proj")


def modelopt_mixed_layers(algos: list[str]) -> dict[str, dict[str, Any]]:
    """A ModelOpt MIXED_PRECISION ``quantized_layers`` giving layer i's seven Llama Linears ``algos[i]`` (NVFP4: group 16)."""
    layers: dict[str, dict[str, Any]] = {}
    for index, algo in enumerate(algos):
        recipe: dict[str, Any] = {"quant_algo": algo} | ({"group_size": 16} if algo == "NVFP4" else {})
        for block, names in zip(("self_attn", "mlp"), _LLAMA_MODULES, strict=True):
            layers |= {f"model.layers.{index}.{block}.{name}": recipe for name in names}
    return layers
