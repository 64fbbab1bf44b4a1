"""Byte budgets of a flow: the bandwidth and in-flight memory budgets, composed.

Four optional :class:`~icefloe.runtime.limits.Limits` feed two modules:

* ``stream_bytes_per_s`` / ``tenant_bytes_per_s``: bytes per second per
  stream and per tenant (:mod:`icefloe.runtime.bandwidth`);
* ``max_inflight_bytes_per_tenant`` / ``max_inflight_bytes``: bytes released
  and not yet read per tenant and per flow, with stall handling and
  admission (:mod:`icefloe.runtime.inflight`).

This module is what the rest of the runtime sees: a stream's :class:`Gate`,
which its producers (nodes, writers) pass before releasing a chunk (rate
first, then memory), the flow's :class:`Budgets`, and their statistics.
With none of the four limits set, a flow has no :class:`Budgets` at all and
a producer pays one ``is None`` test per chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from icefloe.core.token_bucket import TokenBucket
from icefloe.exceptions import ErrorCode
from icefloe.runtime.bandwidth import Bandwidth, StreamRate
from icefloe.runtime.inflight import InFlight, TenantMemory
from icefloe.runtime.limits import Limits

if TYPE_CHECKING:
    from icefloe.runtime.registry import StreamRegistry
    from icefloe.runtime.stream import StreamState

__all__ = ["BudgetStatistics", "Budgets", "Gate", "TenantBudgetStatistics"]


class TenantBudgetStatistics(NamedTuple):
    """One tenant's budgets (:attr:`BudgetStatistics.tenants`)."""

    tenant: str
    #: bytes released into its streams and not yet read, as of the last exact count
    inflight_bytes: int
    #: ``Limits.max_inflight_bytes_per_tenant`` (None: no limit)
    inflight_limit: int | None
    #: ``Limits.tenant_bytes_per_s`` (None: no limit)
    bytes_per_s: float | None
    #: bytes its producers released through the budgets since start
    released_bytes: int
    #: seconds its producers spent waiting on bytes/s buckets (stream and tenant)
    throttled_s: float
    #: producers waiting now for its in-flight bytes to drain
    blocked: int
    #: new streams refused with ``limit_exceeded``
    refused: int


class BudgetStatistics(NamedTuple):
    """The flow's byte budgets (``flow.stats().budgets``)."""

    #: bytes released and not yet read in all streams, as of the last exact count
    inflight_bytes: int
    #: ``Limits.max_inflight_bytes`` (None: no limit)
    inflight_limit: int | None
    #: exact counts made (on a crossed bound, at admission, on re-checks)
    recounts: int
    #: times a producer had to wait for in-flight bytes to drain
    memory_waits: int
    #: new streams refused because the flow's in-flight bytes are over the limit
    refused: int
    #: one entry per tenant with a stream or a budget in use
    tenants: tuple[TenantBudgetStatistics, ...]
    #: streams ended because a memory budget stayed full with no reader progress
    stalled: int = 0


class _Tenant:
    """One tenant's share of the budgets: its bucket, its memory, its counters."""

    __slots__ = ("bucket", "memory", "released", "throttled_s")

    def __init__(self, bucket: TokenBucket | None, memory: TenantMemory) -> None:
        self.bucket = bucket
        self.memory = memory
        self.released = 0
        self.throttled_s = 0.0


class Gate:
    """What one stream's producers pass before releasing a chunk: its bytes/s
    buckets, then its tenant's and the flow's in-flight bytes."""

    __slots__ = ("_in_flight", "_rate", "_state", "_tenant")

    def __init__(
        self, state: StreamState, tenant: _Tenant, rate: StreamRate | None, in_flight: InFlight
    ) -> None:
        self._state = state
        self._tenant = tenant
        self._rate = rate
        self._in_flight = in_flight

    def try_acquire(self, size: int) -> bool:
        """Pay for ``size`` bytes now if every budget has room; False takes nothing.

        A chunk bigger than a bucket's burst needs a full bucket; its excess
        is debt that the bucket's refill repays before granting anything else
        (a non-waiting caller cannot be charged in pieces, so it is charged ahead).
        """
        rate = self._rate
        if rate is not None and not rate.ready(size):
            return False
        tenant = self._tenant
        in_flight = self._in_flight
        if in_flight.limited and not in_flight.room(tenant.memory, size):
            return False
        if rate is not None:
            rate.charge(size)
        tenant.released += size
        if in_flight.limited:
            in_flight.add(tenant.memory, size)
        return True

    async def acquire(self, size: int) -> None:
        """Wait until ``size`` bytes may be released (rate and memory budgets).

        The caller checks the stream's phase afterwards: it may have ended
        while this waited.
        """
        tenant = self._tenant
        if self._rate is not None:
            tenant.throttled_s += await self._rate.pay(size)
        # Released once every bytes/s bucket has paid (not while it waits).
        tenant.released += size
        in_flight = self._in_flight
        if in_flight.limited and in_flight.add(tenant.memory, size):
            await in_flight.drain(tenant.memory, self._state)


class Budgets:
    """The byte budgets of one flow; built only when a byte limit is set."""

    def __init__(
        self,
        limits: Limits,
        registry: StreamRegistry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._registry = registry
        #: the bytes/s budgets
        self.bandwidth = Bandwidth(limits, clock)
        #: the in-flight memory budgets
        self.in_flight = InFlight(limits, registry, clock)
        self._tenants: dict[str, _Tenant] = {}

    @staticmethod
    def wanted(limits: Limits) -> bool:
        """Whether ``limits`` set any byte budget (else a flow builds none)."""
        return any(
            value is not None
            for value in (
                limits.stream_bytes_per_s,
                limits.tenant_bytes_per_s,
                limits.max_inflight_bytes_per_tenant,
                limits.max_inflight_bytes,
            )
        )

    def gate(self, state: StreamState) -> Gate:
        """The gate of ``state``, shared by all its producers (nodes, writers).

        It is kept on the stream (``state.budget_gate``), so it lives exactly
        as long as the stream does.
        """
        gate: Gate | None = state.budget_gate
        if gate is None:
            tenant = self._tenant(state.headers.tenant)
            rate = self.bandwidth.stream_rate(tenant.bucket)
            gate = state.budget_gate = Gate(state, tenant, rate, self.in_flight)
        return gate

    def _tenant(self, name: str) -> _Tenant:
        tenant = self._tenants.get(name)
        if tenant is None:
            if len(self._tenants) > 64 and len(self._tenants) > 2 * len(self._registry):
                self._prune()
            memory = self.in_flight.account(name)
            tenant = self._tenants[name] = _Tenant(self.bandwidth.tenant_bucket(), memory)
        return tenant

    def _prune(self) -> None:
        # Forget tenants with nothing in flight, nobody waiting and a full
        # bucket: a fresh account would be identical, so nothing is lost.
        self.in_flight.recount()
        for name, tenant in list(self._tenants.items()):
            if Bandwidth.idle(tenant.bucket) and self.in_flight.forget(name):
                del self._tenants[name]

    def refusal(self, tenant: str) -> tuple[ErrorCode, str] | None:
        """Why a new stream of ``tenant`` is refused now (None: admitted);
        see :meth:`InFlight.refusal`."""
        return self.in_flight.refusal(tenant)

    def recount(self) -> None:
        """Count the unread bytes of every stream exactly (:meth:`InFlight.recount`)."""
        self.in_flight.recount()

    def close(self) -> None:
        """Release every waiting producer (flow stop)."""
        self.in_flight.close()

    def statistics(self) -> BudgetStatistics:
        in_flight = self.in_flight
        in_flight.recount()
        limits = self.limits
        tenants = tuple(
            TenantBudgetStatistics(
                name,
                tenant.memory.inflight,
                limits.max_inflight_bytes_per_tenant,
                limits.tenant_bytes_per_s,
                tenant.released,
                tenant.throttled_s,
                tenant.memory.blocked,
                tenant.memory.refused,
            )
            for name, tenant in sorted(self._tenants.items())
        )
        return BudgetStatistics(
            in_flight.inflight,
            limits.max_inflight_bytes,
            in_flight.recounts,
            in_flight.memory_waits,
            in_flight.refused,
            tenants,
            in_flight.stalled,
        )
