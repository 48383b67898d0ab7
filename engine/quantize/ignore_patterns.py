"""The user's --ignore patterns, resolved to the Linear modules they leave 16-bit (whole fused layers)."""

from __future__ import annotations

import fnmatch
import re

from engine.errors import QuantTuiError

# Checkpoint tensors vLLM loads into one fused Linear: all or none of them may be quantized.
FUSED_SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("w1", "w3"))  # LFM2's w13
_EXPERT_PATTERN = re.compile(r"^(?P<block>.+\.experts)\.\d+\.[^.]+$")


def compile_ignore(patterns: tuple[str, ...]) -> list[tuple[str, re.Pattern[str] | None]]:
    """Checks the user's ignore patterns: ``re:`` regular expressions, else shell globs or exact names.

    Raises:
        QuantTuiError: a ``re:`` pattern is not a valid regular expression.
    """
    compiled: list[tuple[str, re.Pattern[str] | None]] = []
    for pattern in patterns:
        if pattern.startswith("re:"):
            try:
                compiled.append((pattern, re.compile(pattern[3:])))
            except re.error as error:
                raise QuantTuiError(f"--ignore {pattern}: not a valid regular expression ({error})") from None
        else:
            compiled.append((pattern, None))
    return compiled


def _matches(module: str, pattern: str, regex: re.Pattern[str] | None) -> bool:
    if regex is not None:
        return regex.match(module) is not None
    return module == pattern or fnmatch.fnmatchcase(module, pattern)


def resolve_ignored(linear_modules: list[str], patterns: tuple[str, ...]) -> set[str]:
    """The Linear modules the user's patterns leave unquantized, widened to whole fused layers.

    Raises:
        QuantTuiError: a pattern matches no Linear layer, or selects single MoE experts.
    """
    ignored: set[str] = set()
    for pattern, regex in compile_ignore(patterns):
        hits = {module for module in linear_modules if _matches(module, pattern, regex)}
        if not hits:
            example = linear_modules[0] if linear_modules else "model.layers.0.mlp.down_proj"
            raise QuantTuiError(
                f"--ignore {pattern} matches no Linear layer; names look like {example} "
                "(use a glob such as '*.down_proj' or 're:<regex>')"
            )
        ignored |= hits
    experts = {match["block"] for module in ignored if (match := _EXPERT_PATTERN.match(module))}
    if experts:
        raise QuantTuiError(
            f"--ignore selects MoE expert weights in {sorted(experts)[0]}; vLLM quantizes a layer's "
            "experts together, so leave experts out of --ignore"
        )
    present = set(linear_modules)
    for module in list(ignored):
        parent, _, leaf = module.rpartition(".")
        for group in FUSED_SIBLINGS:
            if leaf in group:
                ignored |= {f"{parent}.{sibling}" for sibling in group} & present
    return ignored


def fused_siblings(weight_name: str) -> tuple[str, ...]:
    """The weights vLLM fuses with ``weight_name`` into one Linear (itself included); just itself when none."""
    module = weight_name.removesuffix(".weight")
    parent, _, leaf = module.rpartition(".")
    for group in FUSED_SIBLINGS:
        if leaf in group:
            return tuple(f"{parent}.{sibling}.weight" for sibling in group)
    return (weight_name,)
