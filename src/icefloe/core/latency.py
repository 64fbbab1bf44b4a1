"""A per-stream latency budget: observations, violations and quantiles.

:class:`LatencyBudget` records how long each chunk took (the caller measures;
the tracker reads no clock), counts the ones over budget, and estimates
quantiles from a log-scale histogram.

The histogram: latencies of at least ``RESOLUTION_S`` (1 µs) fall in buckets
``[R * 2**(i/k), R * 2**((i+1)/k))`` with ``k = buckets_per_octave``; smaller
ones share one bucket ``[0, R)``. Buckets are kept in a dict and only the
ones hit exist, so a stream whose latencies span two decades holds about
``7 * k`` counters whatever its count of observations.

Error bound: :meth:`LatencyBudget.quantile` returns the geometric middle of
the bucket holding the nearest-rank sample quantile, clamped to the observed
minimum and maximum, so for quantiles of at least 1 µs it is within a factor
``2**(1 / (2k))`` of the exact sample quantile: 4.4% for the default
``k = 8``, 1.1% for ``k = 32``. Below 1 µs the absolute error is under 1 µs.
Counts, violations, minimum, maximum and mean are exact.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

from icefloe.core.checks import check_fraction, check_positive

__all__ = ["RESOLUTION_S", "LatencyBudget", "LatencyBudgetStatistics"]

#: the smallest latency the histogram resolves, in seconds
RESOLUTION_S: Final = 1e-6

# Index of the bucket [0, RESOLUTION_S).
_UNDER: Final = -1


class LatencyBudgetStatistics(NamedTuple):
    """A snapshot of a :class:`LatencyBudget`; latencies in seconds, ``None`` before any."""

    #: the budget, in milliseconds, as configured
    budget_ms: float
    #: latencies recorded
    observations: int
    #: latencies strictly over the budget
    violations: int
    #: ``violations / observations`` (0.0 before any)
    violation_ratio: float
    #: estimated median
    p50_s: float | None
    #: estimated 99th percentile
    p99_s: float | None
    #: exact smallest latency
    min_s: float | None
    #: exact largest latency
    max_s: float | None
    #: exact mean latency
    mean_s: float | None
    #: the most recent latency
    last_s: float | None


class LatencyBudget:
    """Tracks one stream's latencies against a budget.

    :param budget_ms: the budget, in milliseconds; finite and > 0. A
        latency strictly greater than it is a violation.
    :param buckets_per_octave: histogram resolution, an int from 1 to 64;
        default 8 (quantiles within 4.4%). Memory grows with it linearly.
    :raises ValueError: if either is out of range.
    """

    __slots__ = (
        "_buckets",
        "_budget_ms",
        "_budget_s",
        "_count",
        "_last",
        "_max",
        "_min",
        "_per_octave",
        "_total",
        "_violations",
    )

    def __init__(self, budget_ms: float, *, buckets_per_octave: int = 8) -> None:
        check_positive("budget_ms", budget_ms)
        if (
            not isinstance(buckets_per_octave, int)
            or isinstance(buckets_per_octave, bool)
            or not 1 <= buckets_per_octave <= 64
        ):
            raise ValueError(
                f"buckets_per_octave must be an int from 1 to 64, got {buckets_per_octave!r}"
            )
        self._budget_ms = float(budget_ms)
        self._budget_s = budget_ms / 1000.0
        self._per_octave = buckets_per_octave
        self._buckets: dict[int, int] = {}
        self._count = 0
        self._violations = 0
        self._total = 0.0
        self._min = math.inf
        self._max = 0.0
        self._last: float | None = None

    def __repr__(self) -> str:
        return (
            f"LatencyBudget(budget_ms={self._budget_ms}, observations={self._count}, "
            f"violations={self._violations})"
        )

    @property
    def budget_ms(self) -> float:
        """The budget, in milliseconds."""
        return self._budget_ms

    @property
    def observations(self) -> int:
        """Latencies recorded."""
        return self._count

    @property
    def violations(self) -> int:
        """Latencies strictly over the budget."""
        return self._violations

    @property
    def buckets(self) -> int:
        """Histogram buckets held: its memory, which follows the octaves hit,
        not the number of latencies recorded."""
        return len(self._buckets)

    def record(self, latency_s: float) -> bool:
        """Record one latency, in seconds; return ``True`` if it violated the budget.

        :raises ValueError: if ``latency_s`` is negative or not finite; nothing
            is recorded then.
        """
        if not 0.0 <= latency_s < math.inf:
            raise ValueError(f"latency_s must be a finite number >= 0, got {latency_s!r}")
        index = self._index(latency_s)
        buckets = self._buckets
        buckets[index] = buckets.get(index, 0) + 1
        self._count += 1
        self._total += latency_s
        self._last = latency_s
        if latency_s < self._min:
            self._min = latency_s
        if latency_s > self._max:
            self._max = latency_s
        violated = latency_s > self._budget_s
        if violated:
            self._violations += 1
        return violated

    def _index(self, latency_s: float) -> int:
        if latency_s < RESOLUTION_S:
            return _UNDER
        return math.floor(math.log2(latency_s / RESOLUTION_S) * self._per_octave)

    def _middle(self, index: int) -> float:
        if index == _UNDER:
            return RESOLUTION_S / 2
        return RESOLUTION_S * math.pow(2.0, (index + 0.5) / self._per_octave)

    def quantile(self, q: float) -> float | None:
        """Estimate the ``q`` quantile of the recorded latencies, in seconds.

        Nearest rank: the smallest recorded latency with at least ``q`` of
        the observations at or below it, to within the histogram's error
        (see the module docstring). ``quantile(0)`` and ``quantile(1)`` are
        the exact minimum and maximum.

        :returns: ``None`` if nothing was recorded.
        :raises ValueError: if ``q`` is not between 0 and 1.
        """
        check_fraction("q", q)
        if not self._count:
            return None
        if q == 0.0:
            return self._min
        if q == 1.0:
            return self._max
        rank = max(1, math.ceil(q * self._count))
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return min(max(self._middle(index), self._min), self._max)
        return self._max  # pragma: no cover - the counts add up to _count

    def statistics(self) -> LatencyBudgetStatistics:
        """A snapshot of the counts and the estimated quantiles."""
        count = self._count
        return LatencyBudgetStatistics(
            budget_ms=self._budget_ms,
            observations=count,
            violations=self._violations,
            violation_ratio=self._violations / count if count else 0.0,
            p50_s=self.quantile(0.5),
            p99_s=self.quantile(0.99),
            min_s=self._min if count else None,
            max_s=self._max if count else None,
            mean_s=self._total / count if count else None,
            last_s=self._last,
        )
