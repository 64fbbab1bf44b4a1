"""The one rate limiter: a token bucket with overdraft (debt), clock injected.

:class:`TokenBucket` admits on average ``rate`` tokens per second with bursts
of up to ``burst`` tokens. It never sleeps and never reads the time itself:
the caller passes a monotonic clock, so tests drive it with a fake one, and
every call that can refuse says how many seconds to wait instead.

Its level may go below zero. That *debt* is how a request bigger than the
burst is paid: it is granted on a full bucket, and the tokens it lacks are
repaid by the refill before anything else is granted. Two ways to take:

* :meth:`TokenBucket.take` (and :meth:`~TokenBucket.try_take`,
  :meth:`~TokenBucket.time_until`): the *try* style. Granted only when the
  bucket holds the request (a full bucket for one above the burst), else
  nothing is taken and the answer is the wait. The debt it leaves is at most
  the request's excess over the burst. Request limits and the byte budgets'
  ``emit_nowait`` use it.
* :meth:`TokenBucket.charge`: the *reserve* style. Taken at once whatever
  the level; the answer is how long until the debt is repaid. A caller that
  waits that long before acting never exceeds ``burst + rate * elapsed``,
  and concurrent callers are served in the order they charged (as with the
  generic cell rate algorithm) without a queue. :func:`icefloe.runtime.throttle.pace`
  is its asyncio waiter; connection limits and WebSocket pacing use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["TokenBucket", "TokenBucketStatistics"]

# Float rounding leaves a caller who waited exactly take(n) a hair short of
# n tokens. Two defences keep "wait take(n), then take(n) again" from
# spinning: a request short by less than this fraction of the burst is
# granted (a negligible over-admission), and the wait is padded by two ulps
# of the clock reading, the least a float clock can move.
_SLACK = 1e-9


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


class TokenBucketStatistics(NamedTuple):
    """A snapshot of a :class:`TokenBucket`."""

    #: tokens available at the time of the snapshot (negative: debt)
    tokens: float
    #: refill rate, in tokens per second
    rate: float
    #: capacity, in tokens
    burst: float
    #: tokens taken by granted :meth:`TokenBucket.take` calls and by
    #: :meth:`TokenBucket.charge`, net of what was given back
    admitted: float
    #: :meth:`TokenBucket.take` calls that were refused
    rejected: int


class TokenBucket:
    """Admits ``rate`` tokens per second on average, ``burst`` at most at once.

    The bucket starts full.

    :param rate: refill rate, in tokens per second; finite and > 0.
    :param burst: capacity, in tokens; finite and > 0.
    :param clock: returns monotonic seconds, e.g. ``time.monotonic`` or an
        event loop's ``time``. If it ever goes back, the bucket waits for it
        to catch up instead of refilling twice.
    :raises ValueError: if ``rate`` or ``burst`` is out of range.
    """

    __slots__ = (
        "_admitted",
        "_burst",
        "_clock",
        "_last",
        "_rate",
        "_rejected",
        "_slack",
        "_tokens",
    )

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        _check_positive("rate", rate)
        _check_positive("burst", burst)
        self._rate = float(rate)
        self._burst = float(burst)
        self._slack = self._burst * _SLACK
        self._clock = clock
        self._tokens = self._burst
        self._last = clock()
        self._admitted = 0.0
        self._rejected = 0

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self._rate}, burst={self._burst}, tokens={self._tokens:.3f})"

    def _refill(self) -> float:
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:
            self._last = now
            tokens = self._tokens + elapsed * self._rate
            self._tokens = tokens if tokens < self._burst else self._burst
        return self._tokens

    @staticmethod
    def _check_request(n: float) -> None:
        if not (n >= 0 and math.isfinite(n)):
            raise ValueError(f"n must be a finite number >= 0, got {n!r}")

    def _wait(self, n: float, tokens: float) -> float:
        """Seconds until ``tokens`` (the level now) covers a request of ``n``."""
        deficit = (n if n < self._burst else self._burst) - tokens
        if deficit <= self._slack:
            return 0.0
        return deficit / self._rate + 2 * math.ulp(self._last)

    @property
    def rate(self) -> float:
        """Refill rate, in tokens per second.

        Setting it refills at the old rate up to now and keeps the time until
        the bucket is full again (the deficit is rescaled), as the generic cell
        rate algorithm keeps its theoretical arrival time: an adaptive caller
        can retune it between requests.
        """
        return self._rate

    @rate.setter
    def rate(self, rate: float) -> None:
        _check_positive("rate", rate)
        tokens = self._refill()
        self._tokens = self._burst - (self._burst - tokens) * rate / self._rate
        self._rate = float(rate)

    @property
    def burst(self) -> float:
        """Capacity, in tokens."""
        return self._burst

    @property
    def tokens(self) -> float:
        """Tokens available now (refilled up to the clock's current time);
        negative while the bucket is in debt."""
        return self._refill()

    def take(self, n: float = 1.0) -> float:
        """Take ``n`` tokens if the bucket holds them now: 0.0. Otherwise take
        nothing and return the seconds until it will (> 0).

        A request above the burst needs a full bucket; the tokens it lacks
        become debt, repaid by the refill before anything else is granted.

        :raises ValueError: if ``n`` is negative or not finite.
        """
        tokens = self._refill()
        need = n if n < self._burst else self._burst
        if 0 <= need <= tokens + self._slack and n < math.inf:
            remaining = tokens - n
            # Within the slack a request up to the burst leaves no debt.
            self._tokens = remaining if remaining > 0 or n > self._burst else 0.0
            self._admitted += n
            return 0.0
        self._check_request(n)
        self._rejected += 1
        return self._wait(n, tokens)

    def try_take(self, n: float = 1.0) -> bool:
        """Whether :meth:`take` granted ``n`` tokens (it took them if so)."""
        return self.take(n) == 0.0

    def time_until(self, n: float = 1.0) -> float:
        """Seconds until :meth:`take` of ``n`` would be granted (0.0: now).

        Takes nothing: take after waiting. Another taker may get there first,
        so be ready to wait again.

        :raises ValueError: if ``n`` is negative or not finite.
        """
        self._check_request(n)
        return self._wait(n, self._refill())

    def charge(self, n: float) -> float:
        """Take ``n`` tokens now whatever the level (a negative ``n`` gives them
        back, never above the burst); the seconds until the debt is repaid
        (0.0 if there is none).

        :raises ValueError: if ``n`` is not finite.
        """
        if not math.isfinite(n):
            raise ValueError(f"n must be finite, got {n!r}")
        tokens = self._refill() - n
        self._tokens = tokens if tokens < self._burst else self._burst
        self._admitted += n
        return 0.0 if tokens >= 0 else -tokens / self._rate

    def statistics(self) -> TokenBucketStatistics:
        """A snapshot of the bucket's level and counters."""
        return TokenBucketStatistics(
            tokens=self._refill(),
            rate=self._rate,
            burst=self._burst,
            admitted=self._admitted,
            rejected=self._rejected,
        )
