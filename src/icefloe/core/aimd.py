"""Additive-increase / multiplicative-decrease window sizing.

:class:`AimdWindow` sizes a window (credit to grant, batch size, concurrency)
from signals its owner reports: successes grow it slowly, congestion (a slow
consumer, a full queue, a timeout) halves it. It reads no clock and does no
I/O; the owner decides what counts as a success or as congestion.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from icefloe.core.checks import check_int

__all__ = ["AimdWindow", "AimdWindowStatistics"]

# The window is kept as a float; above 2**53 floats skip integers, and
# rounding could then report a window above the ceiling.
_MAX_CEILING = 2**53


class AimdWindowStatistics(NamedTuple):
    """A snapshot of an :class:`AimdWindow`."""

    #: the current window, as :attr:`AimdWindow.window` reports it
    window: int
    #: the exact window, fraction included (it grows by fractions)
    exact_window: float
    #: the window never shrinks below this
    floor: int
    #: the window never grows above this
    ceiling: int
    #: successes reported since construction
    successes: int
    #: congestion signals reported since construction
    congestion_events: int


class AimdWindow:
    """A window that grows additively on success and shrinks multiplicatively on congestion.

    Growth follows TCP congestion avoidance (RFC 5681): each success adds
    ``increase / window``, so a whole window's worth of successes (one
    "round") grows the window by about ``increase``. ``on_success(n)`` uses the
    closed form ``sqrt(window**2 + 2 * increase * n)`` of that rule, so it
    equals ``n`` calls of ``on_success(1)`` in one step and growth does not
    depend on how successes are batched.

    Invariant: ``floor <= window <= ceiling``.

    :param initial: the starting window, in units of the owner's choosing
        (usually chunks); ``floor <= initial <= ceiling``.
    :param floor: the smallest window, >= 1 so the flow never stops; default 1.
    :param ceiling: the largest window, at most 2**53; default 1024.
    :param increase: growth per round of successes, > 0; default 1.0.
    :param decrease: the factor applied on congestion, strictly between 0
        and 1; default 0.5 (halve).
    :raises ValueError: if any of these is out of range.
    """

    __slots__ = (
        "_ceiling",
        "_congestions",
        "_cwnd",
        "_decrease",
        "_floor",
        "_increase",
        "_successes",
    )

    def __init__(
        self,
        initial: int,
        floor: int = 1,
        ceiling: int = 1024,
        increase: float = 1.0,
        decrease: float = 0.5,
    ) -> None:
        check_int("floor", floor, 1)
        check_int("ceiling", ceiling, floor)
        if ceiling > _MAX_CEILING:
            raise ValueError(f"ceiling must be <= 2**53, got {ceiling}")
        check_int("initial", initial, floor)
        if initial > ceiling:
            raise ValueError(f"initial ({initial}) must not exceed ceiling ({ceiling})")
        if not (math.isfinite(increase) and increase > 0):
            raise ValueError(f"increase must be a finite number > 0, got {increase!r}")
        if not 0 < decrease < 1:
            raise ValueError(f"decrease must be strictly between 0 and 1, got {decrease!r}")
        self._floor = floor
        self._ceiling = ceiling
        self._increase = float(increase)
        self._decrease = float(decrease)
        # Kept as a float: growth arrives in fractions of one unit per success.
        self._cwnd = float(initial)
        self._successes = 0
        self._congestions = 0

    def __repr__(self) -> str:
        return f"AimdWindow(window={self.window}, floor={self._floor}, ceiling={self._ceiling})"

    @property
    def window(self) -> int:
        """The current window, rounded down; ``floor <= window <= ceiling``."""
        return int(self._cwnd)

    def on_success(self, n: int = 1) -> int:
        """Report ``n`` successes (e.g. chunks delivered in time); return the new window.

        :raises ValueError: if ``n`` is negative.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self._successes += n
        cwnd = self._cwnd
        if cwnd < self._ceiling:
            grown = math.sqrt(cwnd * cwnd + 2.0 * self._increase * n)
            self._cwnd = min(grown, float(self._ceiling))
        return int(self._cwnd)

    def on_congestion(self) -> int:
        """Report one congestion event; shrink the window and return it.

        Report one event per episode: calling this for every chunk lost in
        the same burst collapses the window to ``floor``.
        """
        self._congestions += 1
        self._cwnd = max(self._cwnd * self._decrease, float(self._floor))
        return int(self._cwnd)

    def statistics(self) -> AimdWindowStatistics:
        """A snapshot of the window and its counters."""
        return AimdWindowStatistics(
            window=int(self._cwnd),
            exact_window=self._cwnd,
            floor=self._floor,
            ceiling=self._ceiling,
            successes=self._successes,
            congestion_events=self._congestions,
        )
