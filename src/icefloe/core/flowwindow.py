"""The window feedback loop: size a producer's window from queue latency and drain rate.

:class:`FlowWindow` decides how many chunks a producer may hold ahead of its
consumer. It wraps an :class:`~icefloe.core.aimd.AimdWindow` and feeds it
from two measured signals:

* **queue latency**: how long the oldest chunk the consumer has not taken
  yet has waited. Over ``target_latency_s`` the window is cut
  multiplicatively: a consumer falling behind holds less, so memory and
  latency stay low.
* **drain rate**: chunks the consumer took per second over the last round.
  By Little's law a window of ``w`` chunks drained at rate ``r`` waits about
  ``w / r``; the window grows (additively, one ``increase`` per round) only
  while the grown window would still meet the target at the measured rate.
  That stops the AIMD sawtooth at the fixed point instead of overshooting
  into a cut every few rounds.

Rounds follow TCP (RFC 5681, RFC 6582): a round ends when the consumer has
taken every chunk released when it began (one "round trip" of the queue).
The window is cut at most once per round, and a cut ignores latency from
chunks released before the previous cut (NewReno's ``recover``), because
those were queued under the old, larger window.

The owner calls :meth:`FlowWindow.observe` when its producer finds the
window full, so a producer that never waits costs nothing, and one that
waits pays once per window, not per chunk. It reads no clock: the caller
passes the time in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from icefloe.core.aimd import AimdWindow
from icefloe.core.checks import check_int, check_positive

__all__ = ["FlowWindow", "FlowWindowPolicy", "FlowWindowStatistics"]


@dataclass(frozen=True, slots=True)
class FlowWindowPolicy:
    """How an adaptive window reacts; the ceiling comes from the owner's limit.

    :param target_latency_s: the queue latency to stay under, in seconds
        (> 0, finite); default 0.02.
    :param floor: the smallest window, in chunks (>= 1, so the flow never
        stops); a ceiling below it wins. Default 4.
    :param increase: chunks added per round while latency is under target
        (> 0, finite); default 1.0.
    :param decrease: the factor applied on a cut, strictly between 0 and 1;
        default 0.5.
    :raises ValueError: if any of these is out of range.
    """

    target_latency_s: float = 0.02
    floor: int = 4
    increase: float = 1.0
    decrease: float = 0.5

    def __post_init__(self) -> None:
        check_positive("target_latency_s", self.target_latency_s)
        check_int("floor", self.floor, 1)
        check_positive("increase", self.increase)
        decrease = self.decrease
        if isinstance(decrease, bool) or not isinstance(decrease, int | float):
            raise ValueError(f"decrease must be a number, got {decrease!r}")
        if not 0 < decrease < 1:
            raise ValueError(f"decrease must be strictly between 0 and 1, got {decrease!r}")


class FlowWindowStatistics(NamedTuple):
    """A snapshot of a :class:`FlowWindow`."""

    #: the window now, in chunks
    window: int
    #: the smallest window
    floor: int
    #: the largest window (the owner's configured limit)
    ceiling: int
    #: the queue latency the window aims to stay under, in seconds
    target_latency_s: float
    #: the queue latency of the last sample, in seconds
    last_latency_s: float
    #: chunks taken per second over the last complete round (0.0 before one)
    drain_rate: float
    #: samples observed
    samples: int
    #: rounds completed without a cut
    rounds: int
    #: rounds that grew the window
    increases: int
    #: cuts (latency over target)
    decreases: int
    #: rounds under target that did not grow: the drain rate says a bigger
    #: window would wait too long (samples at the ceiling under target skip
    #: the round bookkeeping, so they count no rounds)
    holds: int


class FlowWindow:
    """An AIMD window driven by queue latency and drain rate.

    Invariant: ``floor <= window <= ceiling``; it starts at ``ceiling``, so a
    consumer that keeps up sees the configured window unchanged.

    :param ceiling: the largest window, in chunks (>= 1): the owner's
        configured limit, which the window never exceeds.
    :param policy: the target, floor and AIMD steps.
    :raises ValueError: if ``ceiling`` is not an int >= 1 (or over 2**53).
    """

    __slots__ = (
        "_aimd",
        "_ceiling",
        "_decreases",
        "_end",
        "_holds",
        "_increase",
        "_increases",
        "_last_latency",
        "_mark",
        "_rate",
        "_recover",
        "_rounds",
        "_samples",
        "_start",
        "_target",
        "quiet_latency",
    )

    def __init__(self, ceiling: int, policy: FlowWindowPolicy | None = None) -> None:
        policy = policy or FlowWindowPolicy()
        check_int("ceiling", ceiling, 1)
        floor = min(policy.floor, ceiling)
        self._aimd = AimdWindow(ceiling, floor, ceiling, policy.increase, policy.decrease)
        self._ceiling = ceiling
        self._target = float(policy.target_latency_s)
        #: a sample with at most this latency would change nothing (the window
        #: is at its ceiling and under target), so an owner on a hot path may
        #: skip :meth:`observe` for it; -1.0 while the window is below the ceiling
        self.quiet_latency = self._target
        self._increase = float(policy.increase)
        # The current round: when it began, chunks taken then (mark) and
        # chunks released then (end: the round is over once they are taken).
        self._start: float | None = None
        self._mark = 0
        self._end = 0
        # Chunks released at the last cut: older chunks cannot cause another.
        self._recover = 0
        self._rate = 0.0
        self._last_latency = 0.0
        self._samples = 0
        self._rounds = 0
        self._increases = 0
        self._decreases = 0
        self._holds = 0

    def __repr__(self) -> str:
        return f"FlowWindow(window={self.window}, ceiling={self._ceiling}, target={self._target})"

    @property
    def window(self) -> int:
        """The current window, in chunks; ``floor <= window <= ceiling``."""
        return self._aimd.window

    def observe(self, now: float, latency: float, taken: int, released: int) -> int:
        """Take one sample and return the (possibly new) window.

        :param now: the time, in seconds, on any clock that does not run
            backwards (if it does, the round restarts).
        :param latency: how long, in seconds, the oldest chunk not yet taken
            has waited; a negative value (a clock step) counts as 0.
        :param taken: chunks the consumer has taken so far, a running count.
            If it goes down (another consumer sets the pace now), the round
            restarts.
        :param released: chunks released to the consumer so far, a running
            count, ``>= taken``.
        :raises ValueError: if ``released < taken``.
        """
        if released < taken:
            raise ValueError(f"released ({released}) must be >= taken ({taken})")
        self._samples += 1
        latency = max(latency, 0.0)
        self._last_latency = latency
        if latency <= self.quiet_latency:
            # A consumer that keeps up at the full window: nothing can change,
            # and this is the common case, so it skips the round bookkeeping.
            return self._ceiling
        start = self._start
        if latency > self._target and taken >= self._recover:
            # One late chunk is evidence enough; the cut needs no round data.
            self._quiet(self._aimd.on_congestion())
            self._decreases += 1
            self._recover = released
            self._begin(now, taken, released)
        elif start is None or taken < self._mark or now < start:
            self._begin(now, taken, released)
        elif taken >= self._end and taken > self._mark:
            self._end_round(now - start, taken - self._mark)
            self._begin(now, taken, released)
        return self._aimd.window

    def _quiet(self, window: int) -> None:
        self.quiet_latency = self._target if window == self._ceiling else -1.0

    def _begin(self, now: float, taken: int, released: int) -> None:
        self._start = now
        self._mark = taken
        self._end = released

    def _end_round(self, elapsed: float, drained: int) -> None:
        """A round ended without a cut: grow, or hold at the fixed point.

        (Its samples were under target, or over it only for chunks queued
        before the last cut, which that cut already answered.)
        """
        self._rounds += 1
        # A round shorter than the clock's resolution drained "instantly".
        rate = drained / elapsed if elapsed > 0 else math.inf
        if elapsed > 0:
            self._rate = rate
        window = self._aimd.window
        # Little's law: a window of w drained at rate r waits about w / r.
        if window < self._ceiling and window + self._increase <= self._target * rate:
            self._quiet(self._aimd.on_success(drained))
            self._increases += 1
        else:
            self._holds += 1

    def statistics(self) -> FlowWindowStatistics:
        """A snapshot of the window, the last signals and the counters."""
        aimd = self._aimd.statistics()
        return FlowWindowStatistics(
            window=aimd.window,
            floor=aimd.floor,
            ceiling=aimd.ceiling,
            target_latency_s=self._target,
            last_latency_s=self._last_latency,
            drain_rate=self._rate,
            samples=self._samples,
            rounds=self._rounds,
            increases=self._increases,
            decreases=self._decreases,
            holds=self._holds,
        )
