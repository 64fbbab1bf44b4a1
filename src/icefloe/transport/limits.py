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
  clock says when a connection will close). Connections are counted even
  with no cap, so a principal's own cap always sees exact counts.
* :class:`PrincipalLimits`: one principal's own ``requests_per_s``,
  ``request_burst`` and ``max_connections``, overriding the edge-wide ones
  (from its API key's ``limits`` or its JWT's limits claim, read by
  :func:`parse_principal_limits`). It is passed with each check and
  remembered on the principal's entry, so an :meth:`~PrincipalLimiter.open_connection`
  without one uses the limits of the principal's last request.
* ``tenant_requests_per_s`` / ``tenant_request_burst`` /
  ``tenant_max_connections``: the *tenant layer*, the same two limits for all
  principals of one tenant together. Principals are keyed by (tenant,
  subject), so without it a token issuer could give one tenant unlimited
  connections and rate by minting many subjects. A request or connection
  must pass its principal's limits and then its tenant's; refused by the
  tenant, it gives the principal's token (or slot) back. The tenant is passed
  with :meth:`~PrincipalLimiter.check_request` (``None``: no tenant layer,
  e.g. the client-address keys of unauthenticated requests) and remembered
  on the principal's entry for a later :meth:`~PrincipalLimiter.open_connection`.
  A principal's own limits (its key's or token's) raise its principal caps,
  never its tenant's.
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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from icefloe.core.checks import check_int
from icefloe.core.token_bucket import TokenBucket
from icefloe.exceptions import IcefloeError, InvalidState

__all__ = [
    "CONNECTION_RETRY_AFTER_S",
    "LIMITS_CLAIM",
    "TENANT_FACTOR",
    "EdgeLimitStatistics",
    "EdgeLimits",
    "PrincipalLimiter",
    "PrincipalLimits",
    "RateLimited",
    "parse_principal_limits",
]

#: ``Retry-After`` seconds for a refused connection (or a full principal table)
CONNECTION_RETRY_AFTER_S = 1
#: the tenant layer's defaults are this many times the per-principal ones
TENANT_FACTOR = 4
#: the JWT claim that carries a principal's own limits (same shape as a key file's ``limits``)
LIMITS_CLAIM = "icefloe_limits"


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
    """Per-principal limits of the edge. ``None`` turns a limit off.

    The defaults are sized for a server whose clients all arrive from one
    address (a reverse proxy, an ingress, a backend proxying for its users)
    or share one API key: they stop a runaway client from taking every file
    descriptor or the whole loop, not a busy proxy. docs/security.md says
    how to tighten them once ``--forwarded-allow-ips`` tells clients apart.
    """

    #: sustained requests per second per principal (None: no rate limit)
    requests_per_s: float | None = 1000.0
    #: requests a principal may make at once after being idle (>= 1)
    request_burst: int = 2000
    #: open streaming connections per principal (None: no limit)
    max_connections: int | None = 4096
    #: principals tracked at once; the least recently seen idle one is forgotten (>= 1)
    max_principals: int = 100_000
    #: sustained requests per second of all of one tenant's principals together
    #: (None: no tenant rate). :data:`TENANT_FACTOR` times ``requests_per_s``:
    #: a tenant may run a few services (keys, subjects) at full speed each,
    #: but minting subjects buys no more than that.
    tenant_requests_per_s: float | None = TENANT_FACTOR * 1000.0
    #: requests all of one tenant's principals may make at once (>= 1)
    tenant_request_burst: int = TENANT_FACTOR * 2000
    #: open streaming connections of one tenant, all its principals (None:
    #: no limit); :data:`TENANT_FACTOR` times ``max_connections``
    tenant_max_connections: int | None = TENANT_FACTOR * 4096

    def __post_init__(self) -> None:
        _check_rate("requests_per_s", self.requests_per_s)
        check_int("request_burst", self.request_burst, 1)
        if self.max_connections is not None:
            check_int("max_connections", self.max_connections, 1)
        check_int("max_principals", self.max_principals, 1)
        _check_rate("tenant_requests_per_s", self.tenant_requests_per_s)
        check_int("tenant_request_burst", self.tenant_request_burst, 1)
        if self.tenant_max_connections is not None:
            check_int("tenant_max_connections", self.tenant_max_connections, 1)

    @property
    def has_tenant_layer(self) -> bool:
        """Whether any tenant-wide limit is on (else tenants are not tracked)."""
        return self.tenant_requests_per_s is not None or self.tenant_max_connections is not None


def _check_rate(name: str, rate: object) -> None:
    if rate is not None and (
        not isinstance(rate, int | float)
        or isinstance(rate, bool)
        or not (math.isfinite(rate) and rate > 0)
    ):
        raise ValueError(f"{name} must be a finite number > 0 or None, got {rate!r}")


#: marks a field of :class:`PrincipalLimits` that turns its limit off
_OFF = 0


@dataclass(frozen=True, slots=True)
class PrincipalLimits:
    """One principal's own limits, overriding :class:`EdgeLimits` field by field.

    ``None`` keeps the edge-wide value; ``0`` turns the limit off for this
    principal (as ``0``/``off`` does on the command line).
    """

    #: sustained requests per second (None: the edge's; 0: no rate limit)
    requests_per_s: float | None = None
    #: requests at once after being idle (None: the edge's)
    request_burst: int | None = None
    #: open streaming connections (None: the edge's; 0: no limit)
    max_connections: int | None = None

    def __post_init__(self) -> None:
        if self.requests_per_s is not None and self.requests_per_s != _OFF:
            _check_rate("requests_per_s", self.requests_per_s)
        if self.request_burst is not None:
            check_int("request_burst", self.request_burst, 1)
        if self.max_connections is not None:
            check_int("max_connections", self.max_connections, 0)

    def apply(self, limits: EdgeLimits) -> tuple[float | None, int, int | None]:
        """``(requests_per_s, request_burst, max_connections)`` in force: ``limits``
        with this principal's overrides, ``None`` meaning no limit."""
        rate = limits.requests_per_s if self.requests_per_s is None else self.requests_per_s
        burst = limits.request_burst if self.request_burst is None else self.request_burst
        cap = limits.max_connections if self.max_connections is None else self.max_connections
        return (rate or None, burst, cap or None)


# The names a key file's ``limits`` object (or a JWT's limits claim) may use.
_LIMIT_FIELDS = {
    "requests_per_s": "requests_per_s",
    "request_burst": "request_burst",
    "connections": "max_connections",
}


def parse_principal_limits(value: object, where: str) -> PrincipalLimits:
    """A key file's ``limits`` object, or a JWT limits claim, as :class:`PrincipalLimits`.

    The shape is ``{"connections": N, "requests_per_s": R, "request_burst": B}``,
    every field optional: absent or ``null`` keeps the edge-wide limit, ``0``
    or ``"off"`` turns it off for this principal. The one parser for both
    sources, so a key file and a token mean the same thing.

    :raises ValueError: naming ``where`` and the field, for anything else.
    """
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{where}: 'limits' must be an object like "
            '{"connections": 100, "requests_per_s": 50}'
        )
    fields: dict[str, Any] = {}
    for name, raw in value.items():
        target = _LIMIT_FIELDS.get(name) if isinstance(name, str) else None
        if target is None:
            raise ValueError(
                f"{where}: unknown limit {name!r}; expected some of {sorted(_LIMIT_FIELDS)}"
            )
        if raw == "off":
            raw = _OFF
        if name != "requests_per_s" and isinstance(raw, float) and raw.is_integer():
            raw = int(raw)  # JSON has one number type
        fields[target] = raw
    try:
        return PrincipalLimits(**fields)
    except ValueError as exc:
        raise ValueError(f"{where}: limits: {exc}") from None


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
    #: tenants tracked by the tenant layer now
    tenants: int = 0
    #: requests within their principal's rate refused by their tenant's
    tenant_requests_limited: int = 0
    #: connections within their principal's cap refused by their tenant's
    tenant_connections_refused: int = 0


class _Entry:
    """What the limiter remembers about one principal."""

    __slots__ = ("bucket", "connections", "held_by", "override", "rate", "tenant")

    def __init__(self) -> None:
        #: the request bucket, made on first use for ``rate``
        self.bucket: TokenBucket | None = None
        #: the ``(requests_per_s, request_burst)`` the bucket was made for
        self.rate: tuple[float, int] | None = None
        self.connections = 0
        #: the principal's own limits, as of its last request
        self.override: PrincipalLimits | None = None
        #: the principal's tenant, as of its last request (None: no tenant layer)
        self.tenant: str | None = None
        #: the tenant the open connections are counted against
        self.held_by: str | None = None


class PrincipalLimiter:
    """Request-rate and connection limits per principal key; see the module docs.

    Open connections are counted even with no cap in force, so the counts
    stay exact when a principal's own limits add one.

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
        "_tenant_limited",
        "_tenant_refused",
        "_tenants",
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
        self._tenant_limited = 0
        self._tenant_refused = 0
        # The tenant layer: the same table, keyed by tenant, with the
        # tenant-wide limits (and no tenant layer of its own).
        self._tenants: PrincipalLimiter | None = None
        limits = self._limits
        if limits.has_tenant_layer:
            self._tenants = PrincipalLimiter(
                EdgeLimits(
                    requests_per_s=limits.tenant_requests_per_s,
                    request_burst=limits.tenant_request_burst,
                    max_connections=limits.tenant_max_connections,
                    max_principals=limits.max_principals,
                    tenant_requests_per_s=None,
                    tenant_max_connections=None,
                ),
                clock,
            )

    def __repr__(self) -> str:
        return f"PrincipalLimiter({self._limits!r})"

    @property
    def limits(self) -> EdgeLimits:
        """The edge-wide limits this limiter enforces."""
        return self._limits

    def check_request(
        self, key: str, limits: PrincipalLimits | None = None, *, tenant: str | None = None
    ) -> float | None:
        """Count one request by ``key``, whose own limits are ``limits`` (None:
        the edge's), against its principal's rate and then ``tenant``'s.

        ``tenant`` None: no tenant layer for this request (an address key).

        :returns: ``None`` if it is allowed, else the seconds to send as
            ``Retry-After``: a whole number, at least 1.
        """
        tenants = self._tenants
        if tenant is None or tenants is None:
            known = self._busy.get(key) or self._idle.get(key)
            if known is not None:
                known.tenant = None
            return self._take(key, limits)[0]
        # The entry remembers the tenant for the principal's next connection,
        # even when no rate of its own would need an entry.
        entry = self._entry(key)
        if entry is None:
            self._limited += 1
            return float(CONNECTION_RETRY_AFTER_S)
        entry.tenant = tenant
        retry, bucket = self._take(key, limits)
        if retry is not None:
            return retry
        retry = tenants.check_request(tenant)
        if retry is None:
            return None
        # The tenant refuses: the principal did not get to spend its token.
        if bucket is not None:
            bucket.charge(-1.0)
        self._allowed -= 1
        self._limited += 1
        self._tenant_limited += 1
        return retry

    def _take(
        self, key: str, limits: PrincipalLimits | None
    ) -> tuple[float | None, TokenBucket | None]:
        """One request against ``key``'s own rate: (``Retry-After`` or None,
        the bucket a token was taken from, if any)."""
        if limits is None and self._limits.requests_per_s is None:
            # Nothing to count; only forget an override the key no longer has.
            known = self._busy.get(key) or self._idle.get(key)
            if known is not None:
                known.override = None
            self._allowed += 1
            return None, None
        entry = self._entry(key)
        if entry is None:
            self._limited += 1
            return float(CONNECTION_RETRY_AFTER_S), None
        entry.override = limits
        rate, burst, _ = self._in_force(entry)
        if rate is None:
            self._allowed += 1
            return None, None
        if entry.rate != (rate, burst) or entry.bucket is None:
            # A new principal, or its own limits changed: a fresh, full bucket.
            entry.bucket = TokenBucket(rate, burst, self._clock)
            entry.rate = (rate, burst)
        wait = entry.bucket.take()
        if not wait:
            self._allowed += 1
            return None, entry.bucket
        self._limited += 1
        return float(_whole_seconds(wait)), None

    def open_connection(self, key: str, limits: PrincipalLimits | None = None) -> float | None:
        """Count a streaming connection opened by ``key``, if it is within the limit.

        ``limits`` are the principal's own; ``None`` uses those of its last
        :meth:`check_request`, as for its tenant. Every ``None`` result must
        be paired with one :meth:`close_connection` (or use :meth:`connection`);
        a refusal needs no close.

        :returns: ``None`` if the connection may open, else the seconds to
            send as ``Retry-After``: a whole number, at least 1.
        """
        entry = self._entry(key)
        if entry is None:
            self._refused += 1
            return float(CONNECTION_RETRY_AFTER_S)
        if limits is not None:
            entry.override = limits
        cap = self._in_force(entry)[2]
        if cap is not None and entry.connections >= cap:
            self._refused += 1
            return float(CONNECTION_RETRY_AFTER_S)
        # Every open connection of a principal counts against one tenant: the
        # one of its first (a key names its tenant, so they never differ).
        tenant = entry.held_by if entry.connections else entry.tenant
        tenants = self._tenants
        if tenant is not None and tenants is not None:
            retry = tenants.open_connection(tenant)
            if retry is not None:
                self._refused += 1
                self._tenant_refused += 1
                return retry
            entry.held_by = tenant
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
        entry = self._busy.get(key)
        if entry is None:
            raise InvalidState(f"close_connection({key!r}) without an open connection")
        entry.connections -= 1
        self._open -= 1
        if entry.held_by is not None and self._tenants is not None:
            self._tenants.close_connection(entry.held_by)
        if entry.connections == 0:
            entry.held_by = None
            del self._busy[key]
            self._idle[key] = entry

    @contextmanager
    def connection(self, key: str, limits: PrincipalLimits | None = None) -> Iterator[None]:
        """Hold one of ``key``'s connections for the ``with`` block.

        :raises RateLimited: if ``key`` is at its connection limit.
        """
        retry = self.open_connection(key, limits)
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
            tenants=0 if self._tenants is None else self._tenants.statistics().principals,
            tenant_requests_limited=self._tenant_limited,
            tenant_connections_refused=self._tenant_refused,
        )

    def _in_force(self, entry: _Entry) -> tuple[float | None, int, int | None]:
        limits = self._limits
        if entry.override is None:
            return (limits.requests_per_s, limits.request_burst, limits.max_connections)
        return entry.override.apply(limits)

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
        entry = _Entry()
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
