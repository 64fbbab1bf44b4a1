"""Rate pacing for asyncio callers, and the adaptive admission throttle.

Two small pieces built on pure core objects:

* :func:`pace` takes ``n`` tokens from a :class:`~icefloe.core.token_bucket.TokenBucket`,
  sleeping for exactly as long as the bucket says. Producers (bytes/s budgets)
  and HTTP pumps (bytes/s per connection) use it.
* :class:`AdmissionThrottle` spaces the starts of new low-priority
  ``at_most_once`` runs while the flow is ``congested`` (the "throttled" row of
  :func:`~icefloe.core.congestion.shed`): a virtual-time token bucket (GCRA)
  that hands out *delays* instead of refusals, with a rate that shrinks
  multiplicatively on every congested probe and grows back additively once
  the flow is calm again (AIMD).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import NamedTuple

from icefloe.core.checks import check_finite_non_negative, check_int, check_positive
from icefloe.core.token_bucket import TokenBucket

__all__ = ["AdmissionThrottle", "SheddingPolicy", "ThrottleStatistics", "pace"]


async def pace(bucket: TokenBucket, n: float) -> float:
    """Take ``n`` tokens from ``bucket``, waiting until they are there.

    A request above the bucket's burst is charged in burst-sized pieces, so a
    big chunk costs its full size without ever asking for more than the
    bucket can hold. Returns the seconds spent waiting (0.0 on the fast path).
    """
    waited = 0.0
    burst = bucket.burst
    while n > 0:
        piece = n if n < burst else burst
        if bucket.try_take(piece):
            n -= piece
            continue
        delay = bucket.time_until(piece)
        await asyncio.sleep(delay)
        waited += delay
    return waited


@dataclass(frozen=True, slots=True)
class SheddingPolicy:
    """How a flow throttles new work when congested and sheds accepted work when
    overloaded (``create(..., shedding=SheddingPolicy())``).

    Validated at construction (``ValueError``). See docs/qos.md.
    """

    #: runs per second admitted at full speed (the rate when congestion starts)
    rate: float = 50.0
    #: the rate never falls below this, runs per second, so throttled work still moves
    min_rate: float = 1.0
    #: runs that may start at once before the spacing applies
    burst: int = 4
    #: the factor applied to the rate on every probe (100 ms) spent congested, in (0, 1)
    decrease: float = 0.7
    #: runs per second added back on every probe spent ``normal``
    increase: float = 5.0
    #: a run that would wait longer than this (seconds) to start is refused ``overloaded``
    max_delay_s: float = 5.0
    #: accepted streams ended per probe while an overload is held (0: never shed accepted work)
    shed_per_probe: int = 2

    def __post_init__(self) -> None:
        check_positive("rate", self.rate)
        check_positive("min_rate", self.min_rate)
        if self.min_rate > self.rate:
            raise ValueError(f"min_rate ({self.min_rate}) must not exceed rate ({self.rate})")
        check_int("burst", self.burst, 1)
        check_positive("decrease", self.decrease)
        if self.decrease >= 1:
            raise ValueError(f"decrease must be below 1, got {self.decrease!r}")
        check_positive("increase", self.increase)
        check_finite_non_negative("max_delay_s", self.max_delay_s)
        check_int("shed_per_probe", self.shed_per_probe, 0)


class ThrottleStatistics(NamedTuple):
    """A snapshot of an :class:`AdmissionThrottle`."""

    #: the admission rate now, runs per second
    rate: float
    #: runs delayed since start
    delayed: int
    #: the total delay handed out, seconds
    delayed_s: float
    #: runs refused because they would have waited longer than ``max_delay_s``
    refused: int


class AdmissionThrottle:
    """Hands out start delays for throttled runs; pure, the caller passes ``now``.

    The spacing is the generic cell rate algorithm: a theoretical arrival
    time advances by ``1 / rate`` per run, and a run may start ``burst - 1``
    intervals ahead of it. Unlike a token bucket that says "no", it says
    "in this many seconds", and each answer reserves its slot, so concurrent
    runs queue up in admission order without a queue.
    """

    __slots__ = ("_delayed", "_delayed_s", "_policy", "_rate", "_refused", "_tat")

    def __init__(self, policy: SheddingPolicy) -> None:
        self._policy = policy
        self._rate = policy.rate
        self._tat = -math.inf
        self._delayed = 0
        self._delayed_s = 0.0
        self._refused = 0

    @property
    def rate(self) -> float:
        return self._rate

    def reserve(self, now: float) -> float | None:
        """The delay before a run admitted at ``now`` may start (seconds, >= 0),
        or ``None`` when it would exceed ``max_delay_s`` (nothing is reserved)."""
        interval = 1.0 / self._rate
        tat = self._tat if self._tat > now else now
        delay = tat - (self._policy.burst - 1) * interval - now
        if delay < 0:
            delay = 0.0
        if delay > self._policy.max_delay_s:
            self._refused += 1
            return None
        self._tat = tat + interval
        if delay:
            self._delayed += 1
            self._delayed_s += delay
        return delay

    def refund(self, delay: float) -> None:
        """Give back the last reservation (it returned ``delay``): the run it was
        for did not start. Call it before any other reservation."""
        self._tat -= 1.0 / self._rate
        if delay:
            self._delayed -= 1
            self._delayed_s -= delay

    def on_probe(self, congested: bool) -> None:
        """Adapt the rate: multiplicative decrease while congested, additive increase after."""
        policy = self._policy
        if congested:
            self._rate = max(policy.min_rate, self._rate * policy.decrease)
        elif self._rate < policy.rate:
            self._rate = min(policy.rate, self._rate + policy.increase)

    def statistics(self) -> ThrottleStatistics:
        return ThrottleStatistics(self._rate, self._delayed, self._delayed_s, self._refused)
