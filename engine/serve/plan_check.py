"""Predicted vs. actual: the plan's figures beside what vLLM reported at start-up, with the difference in %."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.plan.server_config import Backend, ServerConfig
from engine.serve.startup_facts import StartupFacts
from engine.units import format_bytes


@dataclass(frozen=True, slots=True)
class FactCheck:
    """One figure, planned and reported.

    Attributes:
        name: what it is ("KV cache tokens", "max concurrency", ...).
        predicted: the plan's value (None when the plan has none).
        actual: vLLM's value (None when its log did not say).
        difference_pct: ``(actual − predicted) / predicted × 100``; None when either is missing.
        must_match: the backend's figure is exact (CPU KV sizing), so any difference is a bug.
    """

    name: str
    predicted: float | str | None
    actual: float | str | None
    difference_pct: float | None
    must_match: bool = False

    @property
    def matches(self) -> bool | None:
        """Whether both sides agree (None when one is missing)."""
        if self.predicted is None or self.actual is None:
            return None
        if isinstance(self.predicted, str) or isinstance(self.actual, str):
            return str(self.predicted) == str(self.actual)
        return abs(self.actual - self.predicted) < 0.005 * max(1.0, abs(self.predicted)) and (
            not self.must_match or round(self.actual, 2) == round(self.predicted, 2)
        )


@dataclass(frozen=True, slots=True)
class PlanVsActual:
    """The comparison made after every launch.

    Attributes:
        backend: the backend that ran.
        checks: KV tokens, concurrency, KV memory, weights memory, kernel, attention backend.
        calibration: the sentence of a calibration the plan applied, if any.
    """

    backend: Backend
    checks: tuple[FactCheck, ...]
    calibration: str | None = None

    @property
    def exact(self) -> bool:
        """Whether every figure that must match does."""
        return all(check.matches is not False for check in self.checks if check.must_match)

    def check(self, name: str) -> FactCheck | None:
        """The check called ``name``."""
        return next((c for c in self.checks if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """The comparison as plain JSON types (``serve --json``, bench results)."""
        return {
            "backend": self.backend,
            "exact": self.exact,
            "calibration": self.calibration,
            "checks": [
                {
                    "name": c.name,
                    "predicted": c.predicted,
                    "actual": c.actual,
                    "difference_pct": c.difference_pct,
                    "must_match": c.must_match,
                }
                for c in self.checks
            ],
        }


def _difference(predicted: float | None, actual: float | None) -> float | None:
    if predicted is None or actual is None or predicted == 0:
        return None
    return round((actual - predicted) / predicted * 100, 3)


def compare_startup(config: ServerConfig, facts: StartupFacts, backend: Backend) -> PlanVsActual | None:
    """Compares the plan a server was started from with what vLLM logged; None without a plan.

    On the CPU backend the KV cache tokens and concurrency are exact (``VLLM_CPU_KVCACHE_SPACE``
    fixes the memory), so they must match; on a GPU a difference is expected and is what
    :func:`record_gpu_calibration` learns from.
    """
    prediction = config.prediction
    if prediction is None:
        return None
    exact = backend == "cpu" and prediction.backend == "cpu"
    tokens = float(prediction.kv_cache_tokens)
    concurrency = round(prediction.max_concurrency, 2)
    checks = [
        FactCheck(
            "KV cache tokens",
            tokens,
            _float(facts.kv_cache_tokens),
            _difference(tokens, _float(facts.kv_cache_tokens)),
            exact,
        ),
        FactCheck(
            "max concurrency",
            concurrency,
            facts.max_concurrency,
            _difference(concurrency, facts.max_concurrency),
            exact,
        ),
        FactCheck(
            "KV cache memory",
            float(prediction.kv_cache_bytes),
            _float(facts.kv_cache_bytes),
            _difference(float(prediction.kv_cache_bytes), _float(facts.kv_cache_bytes)),
        ),
    ]
    if prediction.weights_bytes is not None and facts.weights_memory_bytes is not None:
        checks.append(
            FactCheck(
                "weights memory",
                float(prediction.weights_bytes),
                float(facts.weights_memory_bytes),
                _difference(float(prediction.weights_bytes), float(facts.weights_memory_bytes)),
            )
        )
    if facts.linear_kernel:
        checks.append(FactCheck("linear kernel", None, facts.linear_kernel, None))
    if facts.attention_backend:
        checks.append(FactCheck("attention backend", None, facts.attention_backend, None))
    return PlanVsActual(backend, tuple(checks), prediction.calibration)


def _float(value: int | float | None) -> float | None:
    return None if value is None else float(value)


def record_gpu_calibration(
    config: ServerConfig, facts: StartupFacts, backend: Backend, path: Path | None = None
) -> str | None:
    """On a GPU, stores how far vLLM's KV cache is from the computed plan, for later plans of the same key.

    Returns the calibration's sentence, or None when nothing was recorded (CPU, no plan, no figure).
    """
    from engine.plan.server_plan import CalibrationKey, record_calibration

    prediction = config.prediction
    if backend != "cuda" or prediction is None or prediction.calibration_key is None:
        return None
    if facts.kv_cache_tokens is None:
        return None
    computed = prediction.computed_kv_cache_tokens or prediction.kv_cache_tokens
    key = CalibrationKey(*prediction.calibration_key)
    calibration = record_calibration(key, computed, facts.kv_cache_tokens, path)
    return calibration.sentence() if calibration else None


def comparison_lines(comparison: PlanVsActual) -> list[str]:
    """The comparison as aligned text lines: name, plan, vLLM, difference."""
    lines = []
    for check in comparison.checks:
        if check.predicted is None and check.actual is None:
            continue
        planned = _show(check.name, check.predicted)
        actual = _show(check.name, check.actual)
        if check.difference_pct is None:
            diff = ""
        elif check.matches:
            diff = "exact" if check.difference_pct == 0 else f"{check.difference_pct:+.2f} %"
        else:
            diff = f"{check.difference_pct:+.2f} %" + ("  MISMATCH" if check.must_match else "")
        lines.append(f"{check.name:<18} plan {planned:>16}   vLLM {actual:>16}   {diff}".rstrip())
    if comparison.calibration:
        lines.append(comparison.calibration)
    return lines


def _show(name: str, value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if "memory" in name:
        return format_bytes(value, "MiB", digits=2)
    if "concurrency" in name:
        return f"{value:.2f}x"
    return f"{value:,.0f}"
