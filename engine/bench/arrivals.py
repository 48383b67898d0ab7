"""Request arrival times as ``vllm bench serve`` draws them: all at once, or gamma-distributed gaps at a rate."""

from __future__ import annotations

import math
import random

__all__ = ["arrival_offsets"]


def arrival_offsets(count: int, request_rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Seconds from the start at which each of ``count`` requests arrives.

    As vLLM's ``get_request`` (benchmarks/serve.py): an infinite rate sends everything at 0; an
    infinite burstiness spaces requests exactly ``1/rate`` apart; otherwise the gaps are drawn from
    a gamma distribution of shape ``burstiness`` and mean ``1/rate`` (burstiness 1 is a Poisson
    process; below 1 burstier, above 1 more regular), cumulated, then rescaled so the last arrival is
    exactly ``count / rate``, which steadies the throughput across seeds. The draws come from a
    private generator, so schedules match vLLM's statistically, not draw for draw.

    Args:
        count: How many requests.
        request_rate: Mean requests per second (``math.inf``: all at once).
        burstiness: Gamma shape; must be positive.
        seed: Seed of the draws.
    """
    if count <= 0:
        return []
    if math.isinf(request_rate):
        return [0.0] * count
    if math.isinf(burstiness):
        gaps = [1.0 / request_rate] * count
    else:
        chooser = random.Random(seed)
        gaps = [chooser.gammavariate(burstiness, 1.0 / (request_rate * burstiness)) for _ in range(count)]
    offsets = []
    total = 0.0
    for gap in gaps:
        total += gap
        offsets.append(total)
    if offsets[-1] > 0:
        scale = (count / request_rate) / offsets[-1]
        offsets = [offset * scale for offset in offsets]
    return offsets
