"""Whether vLLM reads a checkpoint's config only by running the checkpoint's own Python (``--trust-remote-code``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

# vLLM 0.32's own config classes (``_CONFIG_REGISTRY`` in vllm/transformers_utils/config.py): for these
# model types vLLM registers its class first and then loads the config with trust_remote_code=False.
VLLM_CONFIG_CLASSES = frozenset(
    {
        "bagel", "bailing_moe_v3_vl", "chatglm", "modernvbert", "colpali", "colqwen3", "ops_colqwen3",
        "qwen3_vl_nemotron_embed", "cosmos3_edge", "deepseek_vl_v2", "deepseek_v32", "deepseek_v4",
        "dots3_note", "k3_dspark", "funaudiochat", "hy_v4", "hyperclovax", "isaac", "kimi_k2", "kimi_linear",
        "kimi_vl", "kimi_k25", "muse_glimmer", "muse_glimmer_text", "muse_glimmer_vision",
        "muse_glimmer_assistant", "kimi_k3", "RefinedWeb", "RefinedWebModel", "mlp_speculator", "medusa",
        "midashenglm", "minimax_m3_vl", "minimax_m3_mtp", "moondream3", "moss_transcribe_diarize", "eagle",
        "speculators", "openvla", "ovis", "ultravox", "step3_vl", "step3_text", "step3p5", "qianfan_ocr",
        "qwen3_asr", "unlimited-ocr", "unlimited_ocr", "deepseek_v41", "inkling_mm_model", "inkling_model",
    }
)  # fmt: skip


def transformers_config_types() -> frozenset[str] | None:
    """The model types the installed transformers has a config class for; None without transformers."""
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    except ImportError:
        return None
    return frozenset(CONFIG_MAPPING_NAMES)


def remote_config_class(
    config: dict[str, Any], known_types: Callable[[], frozenset[str] | None] = transformers_config_types
) -> str | None:
    """The checkpoint's own config class (``auto_map["AutoConfig"]``) when vLLM can load the config only with it.

    transformers runs a checkpoint's configuration file only when ``auto_map`` names an ``AutoConfig`` and it
    has no class of its own for the ``model_type``; vLLM's own classes come first (``VLLM_CONFIG_CLASSES``).
    Without it vLLM stops at start-up ("Failed to load the model config ... --trust-remote-code").

    Args:
        config: the checkpoint's config.json.
        known_types: the model types transformers knows, asked only for a config with an ``AutoConfig``
            (importing transformers takes seconds); None when transformers is not installed, and then
            nothing is claimed.
    """
    auto_map = config.get("auto_map")
    reference = auto_map.get("AutoConfig") if isinstance(auto_map, dict) else None
    model_type = config.get("model_type")
    if not isinstance(reference, str) or not isinstance(model_type, str) or model_type in VLLM_CONFIG_CLASSES:
        return None
    known = known_types()
    if known is None or model_type in known:
        return None
    return reference


def remote_config_file(reference: str) -> str | None:
    """The file in the model folder that holds ``reference`` ("module.Class"); None when it lives in another repo."""
    if "--" in reference:  # "other/repo--module.Class": transformers fetches it from that repo
        return None
    module, _, _ = reference.rpartition(".")
    return f"{module.replace('.', '/')}.py"


def remote_config_warning(folder: Path, reference: str) -> str:
    """What the plan says about ``--trust-remote-code``: that it runs the checkpoint's file, and whether it is there."""
    file = remote_config_file(reference)
    where = f"{file} in the model folder" if file else f"{reference.partition('--')[0]}'s code"
    sentence = (
        f"vLLM reads this model's config only through its own class {reference}: the command passes "
        f"--trust-remote-code, which runs {where}; read it before you serve"
    )
    if file and not (folder / file).is_file():
        sentence += f" ({file} is not in {folder}: copy the checkpoint's .py files there, or vLLM stops)"
    return sentence
