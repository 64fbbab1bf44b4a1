"""Per-principal limits at the HTTP/WebSocket edge: request rate and open connections.

:class:`PrincipalLimiter` keeps, for each principal key (whatever string the
edge picks, e.g. the principal's subject), a :class:`TokenBucket` of requests
and a count of open streaming connections. What happens at each limit of
:class:`EdgeLimits`:

* ``requests_per_s`` / ``request_burst``: a request over the rate is refused
  at once; :meth:`PrincipalLimiter.check_request` returns the whole seconds to
  send as ``Retry-After`` with a 429. Nothing is queued.
* ``max_connections``: one more streaming connection than this is refused
  the same way (``Retry-After`` is :data:`CONNECTION_RETRY_AFTER_S`, since no
  clock says when a connection will close).
* ``max_principals``: the limiter's memory bound. Past it the principal
  unseen for longest, among those with no open connection, is forgotten (so
  it starts again with a full burst). Principals holding connections are
  never forgotten, because their counts must stay exact; if every tracked
  principal holds one, a new principal is refused until one closes.

The limiter never reads the time itself (``clock`` is injected), never
sleeps, and is meant for one event loop: it takes no locks.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from icefloe.core.checks import check_int
from icefloe.core.token_bucket import TokenBucket
from icefloe.exceptions import IcefloeError, InvalidState

__all__ = [
    "CONNECTION_RETRY_AFTER_S",
    "EdgeLimitStatistics",
    "EdgeLimits",
    "PrincipalLimiter",
    "RateLimited",
]

#: ``Retry-After`` seconds for a refused connection (or a full principal table)
CONNECTION_RETRY_AFTER_S = 1


class RateLimited(IcefloeError):
    """A principal is over a limit; answer 429 with ``Retry-After: retry_after``.

    ``retry_after`` is whole seconds, at least 1 (a fraction is rounded up).
    """

    def __init__(self, retry_after: float, message: str = "rate limited") -> None:
        self.retry_after: int = _whole_seconds(retry_after)
        self.message = message
        super().__init__(f"{message}; retry after {self.retry_after} s")


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """Per-principal limits of the edge. ``None`` turns a limit off."""

    #: sustained requests per second per principal (None: no rate limit)
    requests_per_s: float | None = 50.0
    #: requests a principal may make at once after being idle (>= 1)
    request_burst: int = 100
    #: open streaming connections per principal (None: no limit)
    max_connections: int | None = 32
    #: principals tracked at once; the least recently seen idle one is forgotten (>= 1)
    max_principals: int = 100_000

    def __post_init__(self) -> None:
        rate = self.requests_per_s
        if rate is not None and (
            not isinstance(rate, int | float)
            or isinstance(rate, bool)
            or not (math.isfinite(rate) and rate > 0)
        ):
            raise ValueError(f"requests_per_s must be a finite number > 0 or None, got {rate!r}")
        check_int("request_burst", self.request_burst, 1)
        if self.max_connections is not None:
            check_int("max_connections", self.max_connections, 1)
        check_int("max_principals", self.max_principals, 1)


def _whole_seconds(seconds: float) -> int:
    # Retry-After carries whole seconds; rounding down could invite a retry
    # that is refused again, and 0 would invite an immediate one.
    return max(1, math.ceil(seconds))


class EdgeLimitStatistics(NamedTuple):
    """A snapshot of a :class:`PrincipalLimiter`."""

    #: principals tracked now (at most ``max_principals``)
    principals: int
    #: tracked principals holding at least one open connection
    connected_principals: int
    #: streaming connections open now, all principals
    open_connections: int
    #: requests admitted by :meth:`PrincipalLimiter.check_request`
    requests_allowed: int
    #: requests refused by :meth:`PrincipalLimiter.check_request`
    requests_limited: int
    #: connections refused by :meth:`PrincipalLimiter.open_connection`
    connections_refused: int
    #: idle principals forgotten to stay within ``max_principals``
    evicted: int


class _Entry:
    """What the limiter remembers about one principal."""

    __slots__ = ("bucket", "connections")

    def __init__(self, bucket: TokenBucket | None) -> None:
        self.bucket = bucket
        self.connections = 0


class PrincipalLimiter:
    """Request-rate and connection limits per principal key; see the module docs.

    :param limits: the limits; :class:`EdgeLimits` defaults if omitted.
    :param clock: monotonic seconds, for the request buckets.
    """

    __slots__ = (
        "_allowed",
        "_busy",
        "_clock",
        "_evicted",
        "_idle",
        "_limited",
        "_limits",
        "_open",
        "_refused",
    )

    def __init__(
        self, limits: EdgeLimits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = EdgeLimits() if limits is None else limits
        self._clock = clock
        # Principals without open connections, least recently seen first: the
        # only ones that may be evicted.
        self._idle: OrderedDict[str, _Entry] = OrderedDict()
        # Principals with open connections; kept apart so eviction stays O(1).
        self._busy: dict[str, _Entry] = {}
        self._open = 0
        self._allowed = 0
        self._limited = 0
        self._refused = 0
        self._evicted = 0

    def __repr__(self) -> str:
        return f"PrincipalLimiter({self._limits!r})"

    @property
    def limits(self) -> EdgeLimits:
        """The limits this limiter enforces."""
        return self._limits

    def check_request(self, key: str) -> float | None:
        """Count one request by ``key``.

        :returns: ``None`` if it is allowed, else the seconds to send as
            ``Retry-After``: a whole number, at least 1.
        """
        if self._limits.requests_per_s is None:
            self._allowed += 1
            return None
        entry = self._entry(key)
        if entry is None:
            self._limited += 1
            return float(CONNECTION_RETRY_AFTER_S)
        bucket = entry.bucket
        assert bucket is not None  # every entry has one while requests_per_s is set
        wait = bucket.take()
        if not wait:
            self._allowed += 1
            return None
        self._limited += 1
        return float(_whole_seconds(wait))

    def open_connection(self, key: str) -> float | None:
        """Count a streaming connection opened by ``key``, if it is within the limit.

        Every ``None`` result must be paired with one :meth:`close_connection`
        (or use :meth:`connection`); a refusal needs no close.

        :returns: ``None`` if the connection may open, else the seconds to
            send as ``Retry-After``: a whole number, at least 1.
        """
        cap = self._limits.max_connections
        if cap is None:
            return None
        entry = self._entry(key)
        if entry is None or entry.connections >= cap:
            self._refused += 1
            return float(CONNECTION_RETRY_AFTER_S)
        entry.connections += 1
        self._open += 1
        if entry.connections == 1:
            del self._idle[key]
            self._busy[key] = entry
        return None

    def close_connection(self, key: str) -> None:
        """Count the end of a connection that :meth:`open_connection` admitted.

        :raises InvalidState: if ``key`` has no open connection.
        """
        if self._limits.max_connections is None:
            return
        entry = self._busy.get(key)
        if entry is None:
            raise InvalidState(f"close_connection({key!r}) without an open connection")
        entry.connections -= 1
        self._open -= 1
        if entry.connections == 0:
            del self._busy[key]
            # Keep the request bucket; without one there is nothing to remember.
            if entry.bucket is not None:
                self._idle[key] = entry

    @contextmanager
    def connection(self, key: str) -> Iterator[None]:
        """Hold one of ``key``'s connections for the ``with`` block.

        :raises RateLimited: if ``key`` is at its connection limit.
        """
        retry = self.open_connection(key)
        if retry is not None:
            raise RateLimited(retry, "too many open connections")
        try:
            yield
        finally:
            self.close_connection(key)

    def statistics(self) -> EdgeLimitStatistics:
        """A snapshot of the tracked principals and the counters."""
        return EdgeLimitStatistics(
            principals=len(self._idle) + len(self._busy),
            connected_principals=len(self._busy),
            open_connections=self._open,
            requests_allowed=self._allowed,
            requests_limited=self._limited,
            connections_refused=self._refused,
            evicted=self._evicted,
        )

    def _entry(self, key: str) -> _Entry | None:
        """``key``'s entry, created if need be; ``None`` if the table is full of busy ones."""
        entry = self._busy.get(key)
        if entry is not None:
            return entry
        entry = self._idle.get(key)
        if entry is not None:
            self._idle.move_to_end(key)
            return entry
        if not self._make_room():
            return None
        entry = _Entry(self._new_bucket())
        self._idle[key] = entry
        return entry

    def _make_room(self) -> bool:
        if len(self._idle) + len(self._busy) < self._limits.max_principals:
            return True
        if not self._idle:
            return False
        self._idle.popitem(last=False)
        self._evicted += 1
        return True

    def _new_bucket(self) -> TokenBucket | None:
        rate = self._limits.requests_per_s
        if rate is None:
            return None
        return TokenBucket(rate, self._limits.request_burst, self._clock)
