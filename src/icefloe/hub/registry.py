"""The hub's registry: tenants, topics and subscribers, their admission and their end.

Internal to the hub. :class:`HubRegistry` holds what the publish path
(:mod:`icefloe.hub.publish`) reads but does not own. Its topics, their
order, the tenants' budgets and the eviction of idle topics are those of
:class:`~icefloe.hub.topics.TopicBook`, which it extends with:

* each tenant's subscribers and the index routing its topics to them,
  admitted against the subscriber limits and the tenant's byte budget;
* the end of a subscriber, and the count of events it was given;
* whether the hub is closed.

Nothing here waits: subscribing and ending are synchronous, and closing
only wakes the waiters (publishers park in :mod:`icefloe.hub.publish`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from icefloe.core.filters import Filter, compile_filter
from icefloe.core.messages import NO_META, new_id
from icefloe.core.ring import ByteLedger, Overflow, Ring
from icefloe.core.subquota import SubscriberQuota
from icefloe.core.topics import Pattern
from icefloe.exceptions import ClosedResourceError, ErrorCode, IcefloeError, StreamError
from icefloe.hub.checks import check_name, check_range
from icefloe.hub.event import HubEvent
from icefloe.hub.limits import MIB, HubLimits
from icefloe.hub.subscriber import SubscriberState, SubscriptionStatistics
from icefloe.hub.targets import SubscriberInfo
from icefloe.hub.topic import TenantState, replay
from icefloe.hub.topics import TopicBook

__all__ = ["HubRegistry"]


class HubRegistry(TopicBook):
    """The tenants, topics and subscribers of one hub.

    :param limits: the hub's limits.
    :param clock: monotonic seconds, for topic idleness.
    """

    __slots__ = ("_delivered", "_quota", "_subscribers", "closed")

    def __init__(self, limits: HubLimits, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(limits, clock)
        #: whether the hub is closed; set only by :meth:`close`
        self.closed = False
        self._subscribers = 0
        # Events placed in the buffers of ended subscribers (live ones count their own).
        self._delivered = 0
        # Each tenant's subscribers and filter cost; shares identical filters.
        self._quota = SubscriberQuota(
            limits.max_subscribers_per_tenant, limits.max_filter_cost_per_tenant
        )

    # -- subscribers -------------------------------------------------------------------

    def subscribe(
        self,
        pattern: str,
        *,
        tenant: str,
        filter: str | Filter | None,
        buffer: int,
        max_bytes: int | None,
        overflow: Overflow | str,
        from_offset: int | Mapping[str, int] | None,
        subscriber_id: str | None,
        meta: Mapping[str, Any] | None,
        epoch: str | Mapping[str, str] | None = None,
    ) -> SubscriberState:
        """Check, admit and attach a subscriber; see :meth:`icefloe.hub.Hub.subscribe`.

        Nothing changes unless every argument is valid and the subscriber
        is admitted.
        """
        if self.closed:
            raise ClosedResourceError("the hub is closed")
        check_name("tenant", tenant)
        compiled = Pattern(pattern)
        flt = filter if isinstance(filter, Filter) or filter is None else compile_filter(filter)
        limits = self._limits
        check_range("buffer", buffer, 1, limits.max_buffer)
        if max_bytes is None:
            max_bytes = max(limits.max_event_bytes, min(MIB, limits.max_subscriber_bytes))
        check_range("max_bytes", max_bytes, limits.max_event_bytes, limits.max_subscriber_bytes)
        if from_offset is None and epoch is not None:
            raise ValueError("epoch is given only with from_offset")
        owner = self._tenants.get(tenant)
        # The buffer's bytes count against its tenant's budget (and the hub's).
        buffers = owner.buffers if owner is not None else ByteLedger()
        ring: Ring[HubEvent] = Ring(buffer, max_bytes, overflow, ledger=buffers)
        if subscriber_id is None:
            subscriber_id = new_id()
        else:
            check_name("subscriber_id", subscriber_id)
            if owner is not None and subscriber_id in owner.ids:
                raise ValueError(f"subscriber id {subscriber_id!r} is in use by tenant {tenant!r}")
        self._admit_subscriber(tenant, flt, owner)
        info = SubscriberInfo(
            subscriber_id,
            tenant,
            compiled.source,
            None if flt is None else flt.source,
            NO_META if meta is None else dict(meta),
        )
        s = SubscriberState(self, info, compiled, flt, ring)
        if from_offset is not None:
            replayed = replay(self._topics, s, from_offset, epoch)
            if replayed:
                s.replay = deque(replayed)
        # Identical filters of a tenant share one predicate: a publish evaluates it once.
        s.use_filter(self._quota.admit(tenant, flt))
        owner = self._tenant(tenant, buffers)
        owner.index.add(compiled, s)
        owner.ids[subscriber_id] = s
        owner.generation += 1
        self._subscribers += 1
        return s

    def _admit_subscriber(self, tenant: str, flt: Filter | None, owner: TenantState | None) -> None:
        # The tenant's own limits first, so that a refusal names them.
        self._quota.check(tenant, flt)
        limits = self._limits
        if limits.max_subscribers is not None and self._subscribers >= limits.max_subscribers:
            # No figure: the hub's total is every tenant's load.
            raise StreamError(
                ErrorCode.OVERLOADED, "the hub has no room for another subscriber; retry later"
            )
        self.sweep()
        self._admit_bytes(tenant, owner, None)

    def end(self, s: SubscriberState, cause: IcefloeError, *, keep: bool) -> None:
        """Detach ``s`` for ``cause``; ``keep`` leaves its buffer to be read.

        Its readers and the publishers waiting for room in it are woken.
        Ending an ended subscriber does nothing.
        """
        if s.cause is not None:
            return
        s.cause = cause
        owner = self._tenants.get(s.tenant)
        if owner is not None:
            owner.index.discard(s.pattern, s)
            owner.ids.pop(s.subscriber_id, None)
            owner.generation += 1
            self._forget_tenant_if_empty(s.tenant, owner)
        self._subscribers -= 1
        self._quota.release(s.tenant, s.info.filter)
        # Its buffer's count of accepted events goes to the hub's ``delivered``.
        self._delivered += s.ring.statistics().accepted
        if not keep:
            s.discard()
        s.wake_readers()
        s.wake_publishers()

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """End every subscriber (``cancelled``, buffers kept), release queued publishers,
        free the histories. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._make_recent(None)
        for owner in list(self._tenants.values()):
            for s in list(owner.ids.values()):
                cause = StreamError(ErrorCode.CANCELLED, "the hub was closed", s.pattern.source)
                self.end(s, cause, keep=True)
        for state in self._topics.values():
            # Each publisher in line wakes, sees the hub closed and raises.
            for turn in state.queue:
                if not turn.done():
                    turn.set_result(None)
            if state.history is not None:
                state.history.clear()
            state.owner.topics -= 1
        self._topics.clear()
        self._orphans.update(owner.buffers for owner in self._tenants.values())
        self._tenants.clear()

    # -- observing ---------------------------------------------------------------------

    @property
    def subscribers(self) -> int:
        """Live subscribers."""
        return self._subscribers

    def delivered(self) -> int:
        """Events placed in subscriber buffers, summed over subscribers ended or live.

        It visits every live subscriber (their buffers count, so that
        publishing need not): meant for metrics, not for every event.
        """
        live = sum(
            s.ring.statistics().accepted
            for owner in self._tenants.values()
            for s in owner.ids.values()
        )
        return self._delivered + live

    def queued_publishers(self) -> int:
        """Publishers in line at every topic: waiting their turn or for room."""
        return sum(len(state.queue) for state in self._topics.values())

    def subscriber_statistics(self, tenant: str | None = None) -> list[SubscriptionStatistics]:
        """Statistics of every live subscriber (of ``tenant``, if given)."""
        owners = (
            self._tenants.values()
            if tenant is None
            else [o for t, o in self._tenants.items() if t == tenant]
        )
        return [s.statistics() for owner in owners for s in owner.ids.values()]
