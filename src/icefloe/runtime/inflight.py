"""In-flight memory budgets of a flow: unread bytes per tenant and per flow.

``Limits.max_inflight_bytes_per_tenant`` and ``Limits.max_inflight_bytes``
bound the bytes released into a tenant's streams (or all streams) that their
readers have not consumed yet. Past the limit, the tenant's producers wait
until its readers bring it back under three quarters of it (``RESUME_AT``),
and new streams are refused: ``limit_exceeded`` for a tenant's own budget,
``overloaded`` for the flow's.

Counting is kept off the per-chunk path. Each release adds its size to an
upper bound of the in-flight bytes (readers only ever lower the truth); only
when that bound crosses a limit is the exact figure counted, over every
registered stream (:meth:`StreamState.unread_bytes`, which is incremental:
O(1) for a stream that did not move since the last count). Waiting producers
are re-checked by one loop timer, every ``RECHECK_S`` while readers make
progress, backing off to ``RECHECK_MAX_S`` while nothing moves: readers never
call in here, so the token path of every consumer stays untouched.

A memory budget cannot stall for good: if it stays full for
``Limits.inflight_stall_s`` without any reader progress (a stream nobody
reads, a paused client), the running stream holding the most unread bytes is
ended (``limit_exceeded`` for a tenant's budget, ``overloaded`` for the
flow's), its bytes are dropped, and the others go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from icefloe.exceptions import ErrorCode
from icefloe.runtime.limits import Limits

if TYPE_CHECKING:
    from icefloe.runtime.registry import StreamRegistry
    from icefloe.runtime.stream import StreamState

__all__ = ["RECHECK_MAX_S", "RECHECK_S", "RESUME_AT", "InFlight", "TenantMemory"]

#: seconds between re-checks of producers waiting for in-flight bytes to drain
RECHECK_S = 0.005
#: the re-check interval doubles up to this while no reader makes progress
RECHECK_MAX_S = 0.1
#: a waiting producer resumes once in-flight bytes are at most this share of the limit
RESUME_AT = 0.75

_Waiter = tuple["TenantMemory", "StreamState", "asyncio.Future[None]"]


class TenantMemory:
    """One tenant's in-flight bytes and waits."""

    __slots__ = ("blocked", "inflight", "refused", "seen", "since")

    def __init__(self) -> None:
        #: unread bytes of its streams: an upper bound, exact after :meth:`InFlight.recount`
        self.inflight = 0
        #: its producers waiting now for its in-flight bytes to drain
        self.blocked = 0
        #: its new streams refused with ``limit_exceeded``
        self.refused = 0
        # Stall detection while producers wait: the last exact in-flight
        # figure, and when it last went down (or the wait began).
        self.seen = 0
        self.since = 0.0


class InFlight:
    """The in-flight memory budgets of one flow (see the module docstring).

    :param registry: the flow's running streams, counted by :meth:`recount`.
    :param clock: monotonic seconds (a fake one in tests).
    """

    def __init__(
        self, limits: Limits, registry: StreamRegistry, clock: Callable[[], float]
    ) -> None:
        self._registry = registry
        self._clock = clock
        inf = float("inf")
        tenant = limits.max_inflight_bytes_per_tenant
        flow = limits.max_inflight_bytes
        self._tenant_max = tenant
        self._flow_max = flow
        #: whether in-flight bytes are limited at all (a memory limit is set)
        self.limited = tenant is not None or flow is not None
        self.tenant_limit: float = inf if tenant is None else tenant
        self.flow_limit: float = inf if flow is None else flow
        #: unread bytes of all streams: an upper bound, exact after :meth:`recount`
        self.inflight = 0
        self.accounts: dict[str, TenantMemory] = {}
        self._waiters: list[_Waiter] = []
        self._timer: asyncio.TimerHandle | None = None
        self._delay = RECHECK_S  # the re-check timer's interval now (backs off)
        self._stall_s = limits.inflight_stall_s
        # Stall detection of the flow's own budget (as TenantMemory.seen / since).
        self._seen = 0
        self._since = 0.0
        #: when the last exact count was made (the clock's seconds)
        self.counted_at = -inf
        #: exact counts made (on a crossed bound, at admission, on re-checks)
        self.recounts = 0
        #: times a producer had to wait for in-flight bytes to drain
        self.memory_waits = 0
        #: new streams refused because the flow's in-flight bytes are over the limit
        self.refused = 0
        #: streams ended because a memory budget stayed full with no reader progress
        self.stalled = 0

    @property
    def recheck_s(self) -> float:
        """The re-check timer's interval now: ``RECHECK_S``, doubling up to
        ``RECHECK_MAX_S`` while waiting producers see no reader progress."""
        return self._delay

    def account(self, tenant: str) -> TenantMemory:
        """``tenant``'s account, created if need be."""
        account = self.accounts.get(tenant)
        if account is None:
            account = self.accounts[tenant] = TenantMemory()
        return account

    def forget(self, tenant: str) -> bool:
        """Forget ``tenant`` if a fresh account would be identical (nothing in
        flight as of the last count, nobody waiting); whether it did."""
        account = self.accounts.get(tenant)
        if account is None or account.inflight or account.blocked:
            return account is None
        del self.accounts[tenant]
        return True

    # -- producers -------------------------------------------------------------

    def room(self, account: TenantMemory, size: int) -> bool:
        """Whether ``size`` more bytes fit now, without waiting (``emit_nowait``).

        Over the bound it counts exactly, but at most once per ``RECHECK_S``,
        so a caller retrying in a loop does not recount each time.
        """
        if account.inflight + size < self.tenant_limit and self.inflight + size < self.flow_limit:
            return True
        if self._clock() - self.counted_at >= RECHECK_S:
            self.recount()
        return self.drained(account)

    def add(self, account: TenantMemory, size: int) -> bool:
        """Count ``size`` bytes released; whether the bound reached a limit
        (the waiting caller then awaits :meth:`drain`)."""
        account.inflight += size
        self.inflight += size
        return account.inflight >= self.tenant_limit or self.inflight >= self.flow_limit

    async def drain(self, account: TenantMemory, state: StreamState) -> None:
        """Wait while ``account`` (or the flow) holds too many unread bytes.

        Called when the upper bound reached a limit. The exact count decides,
        with hysteresis: the producer goes on only at ``RESUME_AT`` of the
        limit or below, so every count is followed by at least a quarter of
        the limit's bytes before the next, and steady pressure does not
        recount on every chunk. The wait is bounded: see :meth:`_stalled`.
        """
        self.recount()
        if self.drained(account):
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

    def drained(self, account: TenantMemory) -> bool:
        """Whether a producer of ``account`` may go on (both at ``RESUME_AT`` or below)."""
        return (
            account.inflight <= self.tenant_limit * RESUME_AT
            and self.inflight <= self.flow_limit * RESUME_AT
        )

    def _recheck(self) -> None:
        """The re-check timer: wake producers whose budgets drained enough,
        end what stalled, and back off while nothing moves."""
        self._timer = None
        self.recount()
        still = []
        for account, state, fut in self._waiters:
            if fut.done():
                continue
            if state.phase or self.drained(account):
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

    def _stalled(self, waiters: list[_Waiter]) -> bool:
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

    def _end_biggest(self, account: TenantMemory | None, code: ErrorCode) -> bool:
        """End the running stream (of ``account``'s tenant, or any) holding the
        most unread bytes; whether there was one. Uses the counts just made."""
        victim: StreamState | None = None
        most = 0
        accounts = self.accounts
        for state in self._registry:
            if state.phase or (
                account is not None and accounts.get(state.headers.tenant) is not account
            ):
                continue
            unread = state.unread_bytes()
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
        if not self.limited:
            return None
        account = self.accounts.get(tenant)
        if not (self._tenant_full(account) or self._flow_full()):
            return None
        self.recount()  # the bounds only say "maybe"
        if self._tenant_full(account):
            assert account is not None
            account.refused += 1
            return (
                ErrorCode.LIMIT_EXCEEDED,
                f"tenant {tenant!r} has {account.inflight} unread bytes in flight, "
                f"limit {self._tenant_max}",
            )
        if self._flow_full():
            self.refused += 1
            # The total is every tenant's load: the refused client learns only
            # that the server is full (operators read icefloe_inflight_bytes).
            return (ErrorCode.OVERLOADED, "the server's in-flight byte budget is full")
        return None

    def _tenant_full(self, account: TenantMemory | None) -> bool:
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

        O(streams + chunks released or read since the last count): see
        :meth:`StreamState.unread_bytes`.
        """
        self.recounts += 1
        accounts = self.accounts
        for account in accounts.values():
            account.inflight = 0
        total = 0
        for state in self._registry:
            unread = state.unread_bytes()
            total += unread
            owner = accounts.get(state.headers.tenant)
            if owner is not None:
                owner.inflight += unread
        self.inflight = total
        self.counted_at = self._clock()
