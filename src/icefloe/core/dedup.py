"""A time- and size-bounded window of recently seen keys, for deduplication.

:class:`DedupWindow` answers "have I seen this key in the last ``ttl_s``
seconds?" (idempotency keys, redelivered broker messages) in O(1), with
memory bounded by ``max_size`` keys.

The product does not run it yet; it is kept for the next issues, which
will: exactly-once delivery drops a seq a producer re-emits after a retry
(the key is the stream id and seq), and the broker connectors drop a
message the broker redelivers. Remove it if those land without it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, TypeVar

__all__ = ["DedupWindow", "DedupWindowStatistics"]

K = TypeVar("K", bound=Hashable)


class DedupWindowStatistics(NamedTuple):
    """A snapshot of a :class:`DedupWindow`."""

    #: keys held, expired ones not yet dropped included
    size: int
    #: the most keys held at once
    max_size: int
    #: how long a key is remembered, in seconds
    ttl_s: float
    #: :meth:`DedupWindow.seen` calls that found a duplicate
    hits: int
    #: keys dropped because their ttl passed
    evicted_expired: int
    #: keys dropped early, oldest first, to stay within ``max_size``
    evicted_overflow: int


class DedupWindow(Generic[K]):
    """Remembers each key for ``ttl_s`` seconds from its first sighting.

    A repeat sighting does not extend the window, so keys expire in insertion
    order; they are kept in an :class:`~collections.OrderedDict` and expired
    from the front as the clock moves, amortised O(1) per call. (A plain
    ``dict`` would not do: deleting from its front leaves holes that every
    later ``next(iter(d))`` walks over.)

    :param ttl_s: how long a key is remembered, in seconds; finite and > 0.
    :param max_size: the most keys held, in keys; >= 1. Inserting one more
        forgets the oldest key early (counted in ``evicted_overflow``): memory
        stays bounded, at the cost of possibly admitting that key again.
    :param clock: returns monotonic seconds, e.g. ``time.monotonic``.
    :raises ValueError: if ``ttl_s`` or ``max_size`` is out of range.
    """

    __slots__ = (
        "_clock",
        "_evicted_expired",
        "_evicted_overflow",
        "_expiry",
        "_hits",
        "_max_size",
        "_ttl",
    )

    def __init__(self, ttl_s: float, max_size: int, clock: Callable[[], float]) -> None:
        if not (math.isfinite(ttl_s) and ttl_s > 0):
            raise ValueError(f"ttl_s must be a finite number > 0, got {ttl_s!r}")
        if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1:
            raise ValueError(f"max_size must be an int >= 1, got {max_size!r}")
        self._ttl = float(ttl_s)
        self._max_size = max_size
        self._clock = clock
        # key -> the clock time at which it expires, oldest first
        self._expiry: OrderedDict[K, float] = OrderedDict()
        self._hits = 0
        self._evicted_expired = 0
        self._evicted_overflow = 0

    def __repr__(self) -> str:
        return (
            f"DedupWindow(size={len(self._expiry)}, max_size={self._max_size}, ttl_s={self._ttl})"
        )

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        dropped = 0
        while expiry:
            oldest = next(iter(expiry.values()))
            if oldest > now:
                break
            expiry.popitem(last=False)
            dropped += 1
        self._evicted_expired += dropped

    def seen(self, key: K) -> bool:
        """Check and record ``key``: ``True`` if it is a duplicate within the window.

        Otherwise the key is recorded as first seen now and ``False`` returned.
        """
        now = self._clock()
        self._expire(now)
        expiry = self._expiry
        expires_at = expiry.get(key)
        if expires_at is not None:
            if expires_at > now:
                self._hits += 1
                return True
            # Only reachable if the clock went back; re-record it at the end.
            del expiry[key]
            self._evicted_expired += 1
        expiry[key] = now + self._ttl
        if len(expiry) > self._max_size:
            expiry.popitem(last=False)
            self._evicted_overflow += 1
        return False

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is remembered and unexpired; records nothing."""
        # A key of another type is simply absent, as with dict.
        expires_at = self._expiry.get(key)  # type: ignore[arg-type]
        return expires_at is not None and expires_at > self._clock()

    def __len__(self) -> int:
        """How many unexpired keys are remembered (expired ones are dropped first)."""
        self._expire(self._clock())
        return len(self._expiry)

    def statistics(self) -> DedupWindowStatistics:
        """A snapshot of the window's size and counters."""
        return DedupWindowStatistics(
            size=len(self._expiry),
            max_size=self._max_size,
            ttl_s=self._ttl,
            hits=self._hits,
            evicted_expired=self._evicted_expired,
            evicted_overflow=self._evicted_overflow,
        )
