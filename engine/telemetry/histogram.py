"""A Prometheus histogram summed over its label sets: the window between two scrapes and its quantiles."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Histogram"]


@dataclass(frozen=True, slots=True)
class Histogram:
    """A Prometheus histogram summed over its label sets.

    Attributes:
        buckets: ``(upper bound, cumulative count)`` pairs sorted by bound; the last bound is ``inf``
            when the server sent a ``+Inf`` bucket.
        total: The ``_sum`` of observed values.
        count: The ``_count`` of observations.
    """

    buckets: tuple[tuple[float, float], ...]
    total: float
    count: float

    def minus(self, earlier: Histogram) -> Histogram:
        """The observations made since ``earlier``; the whole histogram when the server restarted.

        Args:
            earlier: The same histogram from an earlier scrape.

        Returns:
            A histogram of the window between the two scrapes.
        """
        earlier_counts = dict(earlier.buckets)
        if [bound for bound, _ in self.buckets] != [bound for bound, _ in earlier.buckets]:
            return self
        deltas = tuple((bound, cumulative - earlier_counts[bound]) for bound, cumulative in self.buckets)
        if self.count < earlier.count or any(delta < 0 for _, delta in deltas):
            return self  # a counter reset: the server restarted between the scrapes
        return Histogram(deltas, self.total - earlier.total, self.count - earlier.count)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile, interpolated linearly inside its bucket as Prometheus' histogram_quantile.

        Args:
            q: The quantile, from 0 to 1.

        Returns:
            The estimated value, or ``None`` when there are no observations or no ``+Inf`` bucket.
        """
        if not self.buckets or not math.isinf(self.buckets[-1][0]):
            return None
        observations = self.buckets[-1][1]
        if observations <= 0:
            return None
        rank = q * observations
        index = next(i for i, (_, cumulative) in enumerate(self.buckets) if cumulative >= rank)
        upper, cumulative = self.buckets[index]
        if math.isinf(upper):
            # Prometheus answers with the highest finite bound when the rank lands in the +Inf bucket.
            return self.buckets[-2][0] if len(self.buckets) > 1 else None
        if index == 0 and upper <= 0:
            return upper
        lower, below = (0.0, 0.0) if index == 0 else self.buckets[index - 1]
        in_bucket = cumulative - below
        if in_bucket <= 0:
            return upper
        return lower + (upper - lower) * (rank - below) / in_bucket
