"""Byte budgets of a flow: bandwidth (bytes/s) and memory in flight.

Four optional :class:`~icefloe.runtime.limits.Limits` feed this module:

* ``stream_bytes_per_s`` / ``tenant_bytes_per_s``: token buckets (bytes) per
  stream and per tenant (``Headers.tenant``). A producer releasing a chunk
  takes its size from both, waiting when they are empty. Nothing is dropped:
  the wait is backpressure, and it reaches back through a pipeline's inboxes.
* ``max_inflight_bytes_per_tenant`` / ``max_inflight_bytes``: bytes released
  into a tenant's streams (or all streams) that their readers have not
  consumed yet. Past the limit, the tenant's producers wait until its readers
  bring it back under three quarters of it, and new streams are refused:
  ``limit_exceeded`` for a tenant's own budget, ``overloaded`` for the flow's.

Counting is kept off the per-chunk path. Each release adds its size to an
upper bound of the in-flight bytes (readers only ever lower the truth); only
when that bound crosses a limit is the exact figure counted, over every
registered stream. Each stream's gate remembers its last count (where its
readers and producer stood, and the unread bytes between), so a recount
costs O(1) for a stream that did not move and O(chunks moved) for one that
did; only a stream whose only reader popped past the remembered point is
summed again (O(its unread chunks)). Waiting producers are re-checked by one
loop timer, every ``RECHECK_S`` while readers make progress, backing off to
``RECHECK_MAX_S`` while nothing moves: readers never call in here, so the
token path of every consumer stays untouched.

A memory budget cannot stall for good: if it stays full for
``Limits.inflight_stall_s`` without any reader progress (a stream nobody
reads, a paused client), the running stream holding the most unread bytes is
ended (``limit_exceeded`` for a tenant's budget, ``overloaded`` for the
flow's), its bytes are dropped, and the others go on.

With none of the four limits set, a flow has no :class:`Budgets` at all and
a producer pays one ``is None`` test per chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from icefloe.core.token_bucket import TokenBucket
from icefloe.exceptions import ErrorCode
from icefloe.runtime.limits import Limits
from icefloe.runtime.stream_types import chunk_size  # noqa: F401  (TEMP, tests patch it)
from icefloe.runtime.throttle import pace

if TYPE_CHECKING:
    from icefloe.runtime.registry import StreamRegistry
    from icefloe.runtime.stream import StreamState

__all__ = ["BudgetStatistics", "Budgets", "Gate", "TenantBudgetStatistics"]

#: the key of a stream's gate in ``StreamState.emitters`` (nodes are keyed by ``id``, never -1)
GATE_KEY = -1
#: seconds between re-checks of producers waiting for in-flight bytes to drain
RECHECK_S = 0.005
#: the re-check interval doubles up to this while no reader makes progress
RECHECK_MAX_S = 0.1
#: a waiting producer resumes once in-flight bytes are at most this share of the limit
RESUME_AT = 0.75


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


class _Account:
    """One tenant's share of the budgets."""

    __slots__ = (
        "blocked",
        "bucket",
        "free_at",
        "inflight",
        "lock",
        "refused",
        "released",
        "seen",
        "since",
        "throttled_s",
    )

    def __init__(self, bucket: TokenBucket | None) -> None:
        self.bucket = bucket
        # FIFO between the tenant's producers, so one bucket wakes one waiter.
        self.lock = asyncio.Lock() if bucket is not None else None
        self.free_at = 0.0  # the bucket repays an oversize chunk until then (0: no debt)
        self.inflight = 0  # upper bound; exact after Budgets.recount
        self.released = 0
        self.throttled_s = 0.0
        self.blocked = 0
        self.refused = 0
        # Stall detection while producers wait: the last exact in-flight
        # figure, and when it last went down (or the wait began).
        self.seen = 0
        self.since = 0.0


class Gate:
    """What one stream's producers pass before releasing a chunk.

    It also remembers the stream's last exact count of unread bytes
    (``c_floor``, ``c_head``, ``c_unread``), so :meth:`Budgets.recount` only
    sums what moved since.
    """

    __slots__ = (
        "_account",
        "_bucket",
        "_budgets",
        "_state",
        "c_floor",
        "c_head",
        "c_unread",
        "free_at",
    )

    def __init__(
        self,
        budgets: Budgets,
        state: StreamState,
        account: _Account,
        bucket: TokenBucket | None,
    ) -> None:
        self._budgets = budgets
        self._state = state
        self._account = account
        self._bucket = bucket
        self.free_at = 0.0  # the stream's bucket repays an oversize chunk until then
        self.c_floor = -1  # no count yet
        self.c_head = -1
        self.c_unread = 0

    def try_acquire(self, size: int) -> bool:
        """Pay for ``size`` bytes now if every budget has room; False takes nothing.

        A chunk bigger than a bucket's burst needs a full bucket; it takes the
        burst now and the rest as debt: the bucket refuses everything until
        its refill has paid the whole size (a non-waiting caller cannot be
        charged in pieces, so it is charged ahead).
        """
        own, shared = self._bucket, self._account.bucket
        account = self._account
        budgets = self._budgets
        clock = budgets._clock
        if own is not None and (
            (self.free_at and _in_debt(own, self, clock)) or own.tokens < min(size, own.burst)
        ):
            return False
        if shared is not None and (
            (account.lock is not None and account.lock.locked())
            or (account.free_at and _in_debt(shared, account, clock))
            or shared.tokens < min(size, shared.burst)
        ):
            return False
        if budgets.memory and (
            account.inflight + size >= budgets.tenant_limit
            or budgets.inflight + size >= budgets.flow_limit
        ):
            # Over the bound: count exactly, but at most once per RECHECK_S,
            # so a caller retrying emit_nowait in a loop does not recount each time.
            if clock() - budgets.counted_at >= RECHECK_S:
                budgets.recount()
            if not budgets._drained(account):
                return False
        if own is not None:
            _charge(own, self, size, clock)
        if shared is not None:
            _charge(shared, account, size, clock)
        account.released += size
        if budgets.memory:
            account.inflight += size
            budgets.inflight += size
        return True

    async def acquire(self, size: int) -> None:
        """Wait until ``size`` bytes may be released (rate and memory budgets).

        The caller checks the stream's phase afterwards: it may have ended
        while this waited.
        """
        account = self._account
        clock = self._budgets._clock
        own = self._bucket
        if own is not None:
            if self.free_at:
                account.throttled_s += await _repay(own, self, clock)
            account.throttled_s += await pace(own, size)
        bucket = account.bucket
        if bucket is not None:
            lock = account.lock
            assert lock is not None
            if (
                lock.locked()
                or account.free_at
                or not (size <= bucket.burst and bucket.try_take(size))
            ):
                async with lock:
                    if account.free_at:
                        account.throttled_s += await _repay(bucket, account, clock)
                    account.throttled_s += await pace(bucket, size)
        # Released once every bytes/s bucket has paid (not while it waits).
        account.released += size
        budgets = self._budgets
        if budgets.memory:
            account.inflight += size
            budgets.inflight += size
            if account.inflight >= budgets.tenant_limit or budgets.inflight >= budgets.flow_limit:
                await budgets.drain(account, self._state)


def _charge(
    bucket: TokenBucket, holder: Gate | _Account, size: int, clock: Callable[[], float]
) -> None:
    """Take ``size`` from ``bucket`` (checked to have room); above its burst,
    the rest is debt that ``holder`` repays by ``free_at``."""
    burst = bucket.burst
    if size <= burst:
        bucket.try_take(size)
        return
    bucket.try_take(burst)
    holder.free_at = clock() + (size - burst) / bucket.rate


def _in_debt(bucket: TokenBucket, holder: Gate | _Account, clock: Callable[[], float]) -> bool:
    """Whether ``holder`` still repays an oversize chunk; settles the debt once due.

    Nobody takes from a bucket in debt, so what it refilled up to ``free_at``
    belongs to the debt and is taken now; only the refill since is free.
    """
    now = clock()
    free_at = holder.free_at
    if now < free_at:
        return True
    free = min(bucket.burst, (now - free_at) * bucket.rate)
    owed = bucket.tokens - free
    if owed > 0:
        bucket.try_take(owed)
    holder.free_at = 0.0
    return False


async def _repay(bucket: TokenBucket, holder: Gate | _Account, clock: Callable[[], float]) -> float:
    """Wait until ``holder``'s debt is paid; the seconds waited."""
    waited = 0.0
    while _in_debt(bucket, holder, clock):
        delay = holder.free_at - clock()
        await asyncio.sleep(delay)
        waited += delay
    return waited


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
        self._clock = clock
        inf = float("inf")
        tenant = limits.max_inflight_bytes_per_tenant
        flow = limits.max_inflight_bytes
        #: whether in-flight bytes are counted at all (a memory limit is set)
        self.memory = tenant is not None or flow is not None
        self.tenant_limit: float = inf if tenant is None else tenant
        self.flow_limit: float = inf if flow is None else flow
        self.inflight = 0  # upper bound over all streams; exact after recount
        self._accounts: dict[str, _Account] = {}
        self._waiters: list[tuple[_Account, StreamState, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._delay = RECHECK_S  # the re-check timer's interval now (backs off)
        self._stall_s = limits.inflight_stall_s
        # Stall detection of the flow's own budget (as _Account.seen / since).
        self._seen = 0
        self._since = 0.0
        #: when the last exact count was made (the budgets' clock)
        self.counted_at = -float("inf")
        self.recounts = 0
        self.memory_waits = 0
        self.refused = 0
        self.stalled = 0

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

    # -- producers -------------------------------------------------------------

    def gate(self, state: StreamState) -> Gate:
        """The gate of ``state``, shared by all its producers (nodes, writers).

        It is kept in the stream's ``emitters`` table under a key no node can
        have, so it lives and goes exactly as long as the stream does.
        """
        gate: Gate | None = state.emitters.get(GATE_KEY)
        if gate is None:
            rate = self.limits.stream_bytes_per_s
            bucket = None if rate is None else self._bucket(rate)
            gate = Gate(self, state, self._account(state.headers.tenant), bucket)
            state.emitters[GATE_KEY] = gate
        return gate

    def _bucket(self, rate: float) -> TokenBucket:
        return TokenBucket(rate, max(1.0, rate * self.limits.bytes_burst_s), self._clock)

    def _account(self, tenant: str) -> _Account:
        account = self._accounts.get(tenant)
        if account is None:
            if len(self._accounts) > 64 and len(self._accounts) > 2 * len(self._registry):
                self._prune()
            rate = self.limits.tenant_bytes_per_s
            account = _Account(None if rate is None else self._bucket(rate))
            self._accounts[tenant] = account
        return account

    async def drain(self, account: _Account, state: StreamState) -> None:
        """Wait while ``account`` (or the flow) holds too many unread bytes.

        Called when the upper bound reached a limit. The exact count decides,
        with hysteresis: the producer goes on only at ``RESUME_AT`` of the
        limit or below, so every count is followed by at least a quarter of
        the limit's bytes before the next, and steady pressure does not
        recount on every chunk. The wait is bounded: see :meth:`_stalled`.
        """
        self.recount()
        if self._drained(account):
            return
        self.memory_waits += 1
        loop = asyncio.get_running_loop()
        now = self._clock()
        if not account.blocked:
            account.seen, account.since = account.inflight, now
        if not self._waiters:
            self._seen, self._since = self.inflight, now
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append((account, state, fut))
        account.blocked += 1
        if self._timer is None or self._delay > RECHECK_S:
            # A new waiter is re-checked soon, even while others have stalled.
            if self._timer is not None:
                self._timer.cancel()
            self._delay = RECHECK_S
            self._timer = loop.call_later(RECHECK_S, self._recheck)
        try:
            await fut
        finally:
            account.blocked -= 1
            if not fut.done():
                fut.cancel()  # the producer was cancelled; _recheck forgets it

    def _recheck(self) -> None:
        """The re-check timer: wake producers whose budgets drained enough,
        end what stalled, and back off while nothing moves."""
        self._timer = None
        self.recount()
        still = []
        for account, state, fut in self._waiters:
            if fut.done():
                continue
            if state.phase or self._drained(account):
                fut.set_result(None)
            else:
                still.append((account, state, fut))
        self._waiters = still
        if not still:
            self._delay = RECHECK_S
            return
        moved = self._stalled(still)
        self._delay = RECHECK_S if moved else min(self._delay * 2, RECHECK_MAX_S)
        self._timer = asyncio.get_running_loop().call_later(self._delay, self._recheck)

    def _stalled(self, waiters: list[tuple[_Account, StreamState, asyncio.Future[None]]]) -> bool:
        """Track reader progress of the budgets producers wait on; end the
        biggest unread stream of one that made none for ``inflight_stall_s``.

        Progress is an exact in-flight figure going down. Returns whether
        anything moved (progress, or a stream ended), which resets the
        re-check interval.
        """
        now = self._clock()
        moved = False
        flow_full = self.inflight > self.flow_limit * RESUME_AT
        for account in dict.fromkeys(waiter[0] for waiter in waiters):
            if account.inflight < account.seen:
                account.since = now
                moved = True
            account.seen = account.inflight
            if (
                account.inflight > self.tenant_limit * RESUME_AT
                and now - account.since >= self._stall_s
                and self._end_biggest(account, ErrorCode.LIMIT_EXCEEDED)
            ):
                account.since = now
                moved = True
        if self.inflight < self._seen:
            self._since = now
            moved = True
        self._seen = self.inflight
        if (
            flow_full
            and now - self._since >= self._stall_s
            and self._end_biggest(None, ErrorCode.OVERLOADED)
        ):
            self._since = now
            moved = True
        return moved

    def _end_biggest(self, account: _Account | None, code: ErrorCode) -> bool:
        """End the running stream (of ``account``'s tenant, or any) holding the
        most unread bytes; whether there was one. Uses the counts just made."""
        victim: StreamState | None = None
        most = 0
        accounts = self._accounts
        for state in self._registry:
            if state.phase or (
                account is not None and accounts.get(state.headers.tenant) is not account
            ):
                continue
            unread = _unread_bytes(state)
            if unread > most:
                victim, most = state, unread
        if victim is None:
            return False
        self.stalled += 1
        victim.cancel(
            code,
            f"{most} unread bytes and no reader progress for {self._stall_s:g} s "
            f"while the {'tenant' if account is not None else 'flow'}'s in-flight budget is full",
        )
        return True

    def _drained(self, account: _Account) -> bool:
        return (
            account.inflight <= self.tenant_limit * RESUME_AT
            and self.inflight <= self.flow_limit * RESUME_AT
        )

    def close(self) -> None:
        """Stop the re-check timer and release every waiting producer (flow stop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters = []
        self._delay = RECHECK_S

    # -- admission ---------------------------------------------------------------

    def refusal(self, tenant: str) -> tuple[ErrorCode, str] | None:
        """Why a new stream of ``tenant`` is refused now (None: admitted).

        Refused while the tenant (or the flow) is at its limit, or while its
        producers wait for it to drain: admitting more work then would only
        add to what they wait for.
        """
        if not self.memory:
            return None
        account = self._accounts.get(tenant)
        if not (self._tenant_full(account) or self._flow_full()):
            return None
        self.recount()  # the bounds only say "maybe"
        if self._tenant_full(account):
            assert account is not None
            account.refused += 1
            return (
                ErrorCode.LIMIT_EXCEEDED,
                f"tenant {tenant!r} has {account.inflight} unread bytes in flight, "
                f"limit {self.limits.max_inflight_bytes_per_tenant}",
            )
        if self._flow_full():
            self.refused += 1
            return (
                ErrorCode.OVERLOADED,
                f"{self.inflight} unread bytes in flight, limit {self.limits.max_inflight_bytes}",
            )
        return None

    def _tenant_full(self, account: _Account | None) -> bool:
        if account is None:
            return False
        limit = self.tenant_limit
        used = account.inflight
        return used >= limit or (account.blocked > 0 and used > limit * RESUME_AT)

    def _flow_full(self) -> bool:
        limit = self.flow_limit
        return self.inflight >= limit or (bool(self._waiters) and self.inflight > limit * RESUME_AT)

    # -- counting ----------------------------------------------------------------

    def recount(self) -> None:
        """Count the unread bytes of every stream exactly.

        O(streams + chunks released or read since the last count); see
        :func:`_unread_bytes`.
        """
        self.recounts += 1
        for account in self._accounts.values():
            account.inflight = 0
        total = 0
        accounts = self._accounts
        for state in self._registry:
            unread = _unread_bytes(state)
            total += unread
            owner = accounts.get(state.headers.tenant)
            if owner is not None:
                owner.inflight += unread
        self.inflight = total
        self.counted_at = self._clock()

    def _prune(self) -> None:
        # Forget tenants with nothing in flight, nobody waiting and a full
        # bucket: a fresh account would be identical, so nothing is lost.
        self.recount()
        for tenant, account in list(self._accounts.items()):
            full = account.bucket is None or account.bucket.tokens >= account.bucket.burst
            if not account.inflight and not account.blocked and full:
                del self._accounts[tenant]

    def statistics(self) -> BudgetStatistics:
        self.recount()
        limits = self.limits
        tenants = tuple(
            TenantBudgetStatistics(
                tenant,
                account.inflight,
                limits.max_inflight_bytes_per_tenant,
                limits.tenant_bytes_per_s,
                account.released,
                account.throttled_s,
                account.blocked,
                account.refused,
            )
            for tenant, account in sorted(self._accounts.items())
        )
        return BudgetStatistics(
            self.inflight,
            limits.max_inflight_bytes,
            self.recounts,
            self.memory_waits,
            self.refused,
            tenants,
            self.stalled,
        )


def _unread_bytes(state: StreamState) -> int:
    """Bytes of ``state`` released but not yet read by the readers that pace it.

    TEMP (helper A): the count moved to ``StreamState.unread_bytes()``; helper
    B's version of this module replaces this function.
    """
    return state.unread_bytes()
