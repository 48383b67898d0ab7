"""Every method the recommender can pick is made by an exact `quant-tui quantize` command, or says why not."""

from __future__ import annotations

import shlex

import pytest

from engine.plan import make_it, methods
from engine.quantize.request import METHODS as QUANTIZE_METHODS

# Every method a row of the recommender's flowchart names (engine/plan/method_choice.py: preference_order),
# by hand from its tables; the registry's other methods are checked too.
RECOMMENDABLE = (
    "bf16",
    "fp8",
    "int8-w8a8",
    "w8a16",
    "w4a16",
    "nvfp4",
    "mxfp4",
    "bnb-4bit",
    "bnb-8bit",
    "gguf",
)
EVERY_METHOD = sorted((set(RECOMMENDABLE) | set(methods.METHOD_NAMES)) - {"bf16"})


@pytest.mark.parametrize("name", EVERY_METHOD)
def test_every_recommendable_method_is_made_here_or_says_why(name: str) -> None:
    command = make_it.make_command(name, "/models/llama")
    line = make_it.make_it_line(name, "/models/llama")
    if command is None:
        assert methods.method(name).producer in ("pre-quantized", "other-runtime")
        assert line == methods.method(name).not_made_here
        return
    assert f"`{command}`" in line
    # The command is one the real CLI accepts, with a method `quant-tui quantize` makes.
    from tui.cli import build_parser

    argv = shlex.split(command)
    assert argv[:2] == ["quant-tui", "quantize"]
    args = build_parser().parse_args(argv[1:])
    assert args.method == name and args.method in QUANTIZE_METHODS


@pytest.mark.parametrize(
    ("name", "alternatives"),
    [
        ("int8-w8a8", ("smoothquant-int8",)),
        ("w4a16", ("gptq-w4a16", "awq-w4a16")),
        ("w8a16", ("gptq-w8a16",)),
    ],
)
def test_calibrated_recipes_are_offered_for_their_format(name: str, alternatives: tuple[str, ...]) -> None:
    assert make_it.calibrated_alternatives(name) == alternatives
    line = make_it.make_it_line(name, "demo")
    for other in alternatives:
        assert f"--method {other} --calibration FILE" in line
