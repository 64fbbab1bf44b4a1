"""Rate pacing for asyncio callers, and the adaptive admission throttle.

Two small pieces built on the one rate limiter,
:class:`~icefloe.core.token_bucket.TokenBucket`:

* :func:`pace` is the only place anything sleeps for a bucket: it charges
  ``n`` tokens and sleeps for exactly as long as the bucket says. Producers
  (bytes/s budgets), HTTP pumps (bytes/s per connection) and the WebSocket
  send path (bytes/s per connection) use it.
* :class:`AdmissionThrottle` spaces the starts of new low-priority
  ``at_most_once`` runs while the flow is ``congested`` (the "throttled" row of
  :func:`~icefloe.core.congestion.shed`): a bucket charged one token per run,
  that hands out *delays* instead of refusals (the generic cell rate
  algorithm, which a charged bucket is), with a rate that shrinks
  multiplicatively on every congested probe and grows back additively once
  the flow is calm again (AIMD). The adaptation and the ``max_delay_s``
  refusal are its own; the spacing is the bucket's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import NamedTuple

from icefloe.core.checks import check_finite_non_negative, check_int, check_positive
from icefloe.core.token_bucket import TokenBucket

__all__ = ["AdmissionThrottle", "SheddingPolicy", "ThrottleStatistics", "pace"]


async def pace(bucket: TokenBucket, n: float) -> float:
    """Take ``n`` tokens from ``bucket``, waiting until they are paid for.

    They are charged at once (:meth:`~icefloe.core.token_bucket.TokenBucket.charge`),
    which reserves the bucket's next ``n`` tokens: concurrent pacers of one
    bucket go in the order they called, and a request above the burst simply
    waits for its excess to refill. A pacer cancelled while it waits gives its
    tokens back, since it never used them. Returns the seconds it waited (0.0
    on the fast path).
    """
    delay = bucket.charge(n)
    if delay > 0:
        try:
            await asyncio.sleep(delay)  # pacing, not synchronisation
        except asyncio.CancelledError:
            bucket.charge(-n)
            raise
    return delay


@dataclass(frozen=True, slots=True)
class SheddingPolicy:
    """How a flow throttles new work when congested and sheds accepted work when
    overloaded (``create(..., shedding=SheddingPolicy())``).

    Validated at construction (``ValueError``). See docs/qos.md.
    """

    # Defaults tuned against start-up bursts on a 2-core machine (docs/qos.md,
    # "Start-up bursts"): a burst that congests the loop for a second must not
    # drive the rate so low that its tail waits past max_delay_s and is refused.

    #: runs per second admitted at full speed (the rate when congestion starts)
    rate: float = 200.0
    #: the rate never falls below this, runs per second, so throttled work still moves
    min_rate: float = 5.0
    #: runs that may start at once before the spacing applies
    burst: int = 64
    #: the factor applied to the rate on every probe (100 ms) spent congested, in (0, 1)
    decrease: float = 0.85
    #: runs per second added back on every probe spent ``normal``
    increase: float = 20.0
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

    Each run charges one token of a :class:`~icefloe.core.token_bucket.TokenBucket`
    of ``burst`` tokens: up to ``burst`` runs start at once, then one every
    ``1 / rate`` seconds. Unlike a refusal it says "in this many seconds", and
    each answer reserves its slot, so concurrent runs queue up in admission
    order without a queue.
    """

    __slots__ = ("_bucket", "_delayed", "_delayed_s", "_now", "_policy", "_refused")

    def __init__(self, policy: SheddingPolicy) -> None:
        self._policy = policy
        # The bucket reads the ``now`` of the last call: the throttle stays pure.
        # Minus infinity at first, so the first reservation finds it full.
        self._now = -float("inf")
        self._bucket = TokenBucket(policy.rate, policy.burst, self._clock)
        self._delayed = 0
        self._delayed_s = 0.0
        self._refused = 0

    def _clock(self) -> float:
        return self._now

    @property
    def rate(self) -> float:
        return self._bucket.rate

    def reserve(self, now: float) -> float | None:
        """The delay before a run admitted at ``now`` may start (seconds, >= 0),
        or ``None`` when it would exceed ``max_delay_s`` (nothing is reserved)."""
        self._now = now
        bucket = self._bucket
        if bucket.time_until(1.0) > self._policy.max_delay_s:
            self._refused += 1
            return None
        delay = bucket.charge(1.0)
        if delay:
            self._delayed += 1
            self._delayed_s += delay
        return delay

    def refund(self, delay: float) -> None:
        """Give back the last reservation (it returned ``delay``): the run it was
        for did not start. Call it before any other reservation."""
        self._bucket.charge(-1.0)
        if delay:
            self._delayed -= 1
            self._delayed_s -= delay

    def on_probe(self, congested: bool) -> None:
        """Adapt the rate: multiplicative decrease while congested, additive increase after."""
        policy = self._policy
        rate = self._bucket.rate
        if congested:
            self._bucket.rate = max(policy.min_rate, rate * policy.decrease)
        elif rate < policy.rate:
            self._bucket.rate = min(policy.rate, rate + policy.increase)

    def statistics(self) -> ThrottleStatistics:
        return ThrottleStatistics(self._bucket.rate, self._delayed, self._delayed_s, self._refused)
