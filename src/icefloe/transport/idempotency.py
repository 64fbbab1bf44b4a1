"""A bounded, expiring map, for ``idempotency_key`` and time-to-first-token bookkeeping.

The same idempotency key (per tenant) within ``ttl_s`` returns the stream the
first request started and never starts a second run. Memory is bounded by
``max_size`` keys; the oldest are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

__all__ = ["ExpiringMap", "Started"]

V = TypeVar("V")


class Started(NamedTuple):
    """What a POST started (empty ids: the start failed)."""

    stream_id: str
    trace_id: str


class ExpiringMap(Generic[V]):
    """``str -> V``, each entry expiring ``ttl_s`` after it was put, at most ``max_size``."""

    def __init__(self, ttl_s: float, max_size: int, clock: Callable[[], float]) -> None:
        if not ttl_s > 0 or max_size < 1:
            raise ValueError("ttl_s must be > 0 and max_size >= 1")
        self._ttl = ttl_s
        self._max = max_size
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> V | None:
        self._expire()
        hit = self._items.get(key)
        return None if hit is None else hit[1]

    def put(self, key: str, value: V) -> None:
        self._items[key] = (self._clock() + self._ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def pop(self, key: str) -> V | None:
        hit = self._items.pop(key, None)
        return None if hit is None else hit[1]

    def _expire(self) -> None:
        # Entries are in put order and share one ttl, so expiry is a prefix.
        now = self._clock()
        items = self._items
        while items:
            key, (expires, _) = next(iter(items.items()))
            if expires > now:
                break
            del items[key]
