"""Reading config.json: loading it, its language model's part, the first of several key names it sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import ModelError


def load_config(folder: Path) -> dict[str, Any]:
    """Loads ``config.json``; a missing or malformed file is a ModelError saying what is wrong."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelError(
            f"no config.json in {folder}; point --model at a Hugging Face model folder (or use 'demo')"
        )
    try:
        text = config_path.read_bytes()
    except OSError as error:  # removed or replaced since it was listed: a copy or download in progress
        raise ModelError(
            f"cannot read {config_path} ({error.strerror or error}); if the folder is being written, wait and retry"
        ) from None
    try:
        config = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{config_path} is not valid JSON ({error}); re-download or fix the file") from None
    if not isinstance(config, dict):
        raise ModelError(f"{config_path} does not hold a JSON object; re-download or fix the file")
    return config


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a (possibly multimodal) config, merged over its parent."""
    for key in ("text_config", "llm_config", "language_config", "thinker_config"):
        nested = config.get(key)
        if isinstance(nested, dict):
            inner = text_config(nested) if key == "thinker_config" else nested
            return {**{k: v for k, v in config.items() if not isinstance(v, dict)}, **inner}
    return config


def thinker_section(config: dict[str, Any]) -> dict[str, Any]:
    """An Omni model's ``thinker_config`` (what vLLM loads of it); a config without one is its own thinker."""
    thinker = config.get("thinker_config")
    return thinker if isinstance(thinker, dict) else config


def with_defaults(section: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``section`` over its config class's ``defaults``: a key it leaves out or sets to None takes the default."""
    return defaults | {key: value for key, value in section.items() if value is not None}


def int_fields(section: dict[str, Any], defaults: dict[str, int]) -> dict[str, int]:
    """The integer fields named in ``defaults``, each from ``section`` where it is set (not None)."""
    return {key: int(first_key(section, key, default=default)) for key, default in defaults.items()}


def first_key(config: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """The value of the first of ``keys`` that the config sets (not None), else ``default``."""
    for key in keys:
        value = config.get(key)
        if value is not None:
            return value
    return default
