"""A token bucket rate limiter with an injected clock.

:class:`TokenBucket` admits on average ``rate`` tokens per second with bursts
of up to ``burst`` tokens. It never sleeps and never reads the time itself:
the caller passes a monotonic clock, so tests drive it with a fake one, and
:meth:`TokenBucket.time_until` tells an async caller how long to wait.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["TokenBucket", "TokenBucketStatistics"]

# Float rounding leaves a caller who waited exactly time_until(n) a hair
# short of n tokens. Two defences keep "wait time_until(n), then try_take(n)"
# from spinning: a request short by less than this fraction of the burst is
# granted (a negligible over-admission), and time_until pads its answer by two
# ulps of the clock reading, the least a float clock can move.
_SLACK = 1e-9


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


class TokenBucketStatistics(NamedTuple):
    """A snapshot of a :class:`TokenBucket`."""

    #: tokens available at the time of the snapshot
    tokens: float
    #: refill rate, in tokens per second
    rate: float
    #: capacity, in tokens
    burst: float
    #: tokens handed out by successful :meth:`TokenBucket.try_take` calls
    admitted: float
    #: :meth:`TokenBucket.try_take` calls that returned ``False``
    rejected: int


class TokenBucket:
    """Admits ``rate`` tokens per second on average, ``burst`` at most at once.

    The bucket starts full.

    :param rate: refill rate, in tokens per second; finite and > 0.
    :param burst: capacity, in tokens; finite and > 0. It is also the
        largest single request that can ever succeed.
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

    def _check_request(self, n: float) -> None:
        if not 0 <= n <= self._burst:
            raise ValueError(f"n must be between 0 and burst ({self._burst}), got {n!r}")

    @property
    def rate(self) -> float:
        """Refill rate, in tokens per second."""
        return self._rate

    @property
    def burst(self) -> float:
        """Capacity, in tokens."""
        return self._burst

    @property
    def tokens(self) -> float:
        """Tokens available now (refilled up to the clock's current time)."""
        return self._refill()

    def try_take(self, n: float = 1.0) -> bool:
        """Take ``n`` tokens if they are available now; return whether it did.

        :raises ValueError: if ``n`` is negative or above ``burst``: such a
            request could never succeed, and retrying it would spin forever.
        """
        tokens = self._refill()
        if 0 <= n <= tokens + self._slack:
            remaining = tokens - n
            self._tokens = remaining if remaining > 0 else 0.0
            self._admitted += n
            return True
        self._check_request(n)
        self._rejected += 1
        return False

    def time_until(self, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens will be available (0.0 if they are now).

        Takes nothing: call :meth:`try_take` after waiting. Another taker may
        get there first, so be ready to wait again.

        :raises ValueError: if ``n`` is negative or above ``burst``.
        """
        self._check_request(n)
        deficit = n - self._refill()
        if deficit <= self._slack:
            return 0.0
        return deficit / self._rate + 2 * math.ulp(self._last)

    def statistics(self) -> TokenBucketStatistics:
        """A snapshot of the bucket's level and counters."""
        return TokenBucketStatistics(
            tokens=self._refill(),
            rate=self._rate,
            burst=self._burst,
            admitted=self._admitted,
            rejected=self._rejected,
        )
