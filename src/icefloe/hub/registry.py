"""The hub's registry: tenants, topics and subscribers, their admission and their end.

Internal to the hub. :class:`HubRegistry` holds what the publish path
(:mod:`icefloe.hub.publish`) reads but does not own:

* the topics, per tenant and name, least recently published first (the
  order idle topics are evicted in past ``max_topics``), and the topic
  published to last (:attr:`HubRegistry.recent`), which the publish path
  finds without a lookup;
* the count of events published: the recent topic's offsets count its own
  since it became recent, so a publish to it bumps one counter less;
* each tenant's subscribers and the index routing its topics to them;
* the bytes held in subscriber buffers and topic histories (two
  :class:`~icefloe.core.ring.ByteLedger` kept by the rings and histories),
  checked against ``max_bytes_total`` when a topic or a subscriber is added;
* whether the hub is closed.

Nothing here waits: subscribing and ending are synchronous, and closing
only wakes the waiters (publishers park in :mod:`icefloe.hub.publish`).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any

from icefloe.core.filters import Filter, compile_filter
from icefloe.core.messages import NO_META, new_id
from icefloe.core.ring import ByteLedger, Overflow, Ring
from icefloe.core.subquota import SubscriberQuota
from icefloe.core.topics import Pattern, validate_topic
from icefloe.exceptions import ClosedResourceError, ErrorCode, IcefloeError, StreamError
from icefloe.hub.checks import check_name, check_range
from icefloe.hub.event import HubEvent
from icefloe.hub.limits import MIB, HubLimits
from icefloe.hub.subscription import SubscriberInfo, SubscriberState, SubscriptionStatistics
from icefloe.hub.topic import TenantState, TopicState, replay

__all__ = ["HubRegistry"]


class HubRegistry:
    """The tenants, topics and subscribers of one hub.

    :param limits: the hub's limits.
    :param clock: monotonic seconds, for topic idleness.
    """

    __slots__ = (
        "_buffer_bytes",
        "_clock",
        "_delivered",
        "_history_bytes",
        "_limits",
        "_published",
        "_quota",
        "_recent_from",
        "_subscribers",
        "_tenants",
        "_topics",
        "closed",
        "recent",
    )

    def __init__(self, limits: HubLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._tenants: dict[str, TenantState] = {}
        # Least recently published first, for eviction.
        self._topics: OrderedDict[tuple[str, str], TopicState] = OrderedDict()
        #: the topic published to last (so the last in the LRU order), or None;
        #: read by the publish path on every publish, written only here
        self.recent: TopicState | None = None
        # The recent topic's next offset when it became recent (see published_now).
        self._recent_from = 0
        #: whether the hub is closed; set only by :meth:`close`
        self.closed = False
        self._subscribers = 0
        # Each tenant's subscribers and filter cost; shares identical filters.
        self._quota = SubscriberQuota(
            limits.max_subscribers_per_tenant, limits.max_filter_cost_per_tenant
        )
        # Bytes held in subscriber buffers and in topic histories, kept by the rings.
        self._buffer_bytes = ByteLedger()
        self._history_bytes = ByteLedger()
        # Events published, but for the recent topic's since it became recent,
        # which its offsets count: one counter less to bump on every publish.
        self._published = 0
        # Events placed in the buffers of ended subscribers (live ones count their own).
        self._delivered = 0

    # -- topics ------------------------------------------------------------------------

    def topic_for(self, tenant: str, name: str) -> TopicState:
        """The topic ``name`` of ``tenant``, made the recent one (created if new).

        :raises TopicError: ``name`` is not a valid topic name.
        :raises StreamError: ``overloaded``: a new topic past ``max_topics``
            (none idle) or ``max_bytes_total``.
        """
        state = self.recent
        if state is not None and state.name == name and state.tenant == tenant:
            return state  # already last in the LRU order
        key = (tenant, name)
        topics = self._topics
        state = topics.get(key)
        if state is not None:
            topics.move_to_end(key)
            self._make_recent(state)
            return state
        validate_topic(name)
        limits = self._limits
        full = limits.max_topics is not None and len(topics) >= limits.max_topics
        if full and not self._evict_idle_topic():
            raise StreamError(
                ErrorCode.OVERLOADED,
                f"the hub holds its limit of {limits.max_topics} topics, none idle for "
                f"{limits.topic_idle_s} s",
                name,
            )
        self._admit_bytes(name)
        owner = self._tenant(tenant)
        # The first offset is the hub's publish count, so that a topic evicted
        # and created again never reuses an offset a subscriber may remember.
        state = TopicState(
            owner, tenant, name, self.published_now(), limits, self._clock(), self._history_bytes
        )
        owner.topics += 1
        topics[key] = state
        self._make_recent(state)
        return state

    def topic(self, tenant: str, name: str) -> TopicState | None:
        """The topic ``name`` of ``tenant`` if held, without touching the LRU order."""
        return self._topics.get((tenant, name))

    def count_publish(self) -> None:
        """Count one event published to a topic other than :attr:`recent`.

        The recent topic's events are counted by its offsets; the publish
        path calls this only for another topic (one whose publisher waited
        while others were published to).
        """
        self._published += 1

    def published_now(self) -> int:
        """Events published so far (each was given an offset)."""
        recent = self.recent
        if recent is None:
            return self._published
        return self._published + recent.next_offset - self._recent_from

    def _make_recent(self, state: TopicState | None) -> None:
        recent = self.recent
        if recent is not None:
            self._published += recent.next_offset - self._recent_from
        self.recent = state
        self._recent_from = state.next_offset if state is not None else 0

    def _evict_idle_topic(self) -> bool:
        key, state = next(iter(self._topics.items()))
        if state.queue or self._clock() - state.last_used < self._limits.topic_idle_s:
            return False
        del self._topics[key]
        if state is self.recent:
            self._make_recent(None)
        if state.history is not None:
            state.history.clear()
        owner = state.owner
        owner.topics -= 1
        self._forget_tenant_if_empty(state.tenant, owner)
        return True

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
        ring: Ring[HubEvent] = Ring(buffer, max_bytes, overflow, ledger=self._buffer_bytes)
        owner = self._tenants.get(tenant)
        if subscriber_id is None:
            subscriber_id = new_id()
        else:
            check_name("subscriber_id", subscriber_id)
            if owner is not None and subscriber_id in owner.ids:
                raise ValueError(f"subscriber id {subscriber_id!r} is in use by tenant {tenant!r}")
        self._admit_subscriber(tenant, flt)
        info = SubscriberInfo(
            subscriber_id,
            tenant,
            compiled.source,
            None if flt is None else flt.source,
            NO_META if meta is None else dict(meta),
        )
        s = SubscriberState(self, info, compiled, flt, ring)
        if from_offset is not None:
            replayed = replay(self._topics, s, from_offset)
            if replayed:
                s.replay = deque(replayed)
        # Identical filters of a tenant share one predicate: a publish evaluates it once.
        s.use_filter(self._quota.admit(tenant, flt))
        owner = self._tenant(tenant)
        owner.index.add(compiled, s)
        owner.ids[subscriber_id] = s
        owner.generation += 1
        self._subscribers += 1
        return s

    def _admit_subscriber(self, tenant: str, flt: Filter | None) -> None:
        # The tenant's own limits first, so that a refusal names them.
        self._quota.check(tenant, flt)
        limits = self._limits
        if limits.max_subscribers is not None and self._subscribers >= limits.max_subscribers:
            # No figure: the hub's total is every tenant's load.
            raise StreamError(
                ErrorCode.OVERLOADED, "the hub has no room for another subscriber; retry later"
            )
        self._admit_bytes(None)

    def _admit_bytes(self, topic: str | None) -> None:
        limit = self._limits.max_bytes_total
        held = self._buffer_bytes.held + self._history_bytes.held
        if limit is not None and held >= limit:
            raise StreamError(
                ErrorCode.OVERLOADED,
                f"the hub holds {held} bytes, at its limit of {limit}",
                topic,
            )

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

    def _tenant(self, tenant: str) -> TenantState:
        owner = self._tenants.get(tenant)
        if owner is None:
            owner = self._tenants[tenant] = TenantState()
        return owner

    def _forget_tenant_if_empty(self, tenant: str, owner: TenantState) -> None:
        if owner.empty():
            self._tenants.pop(tenant, None)

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
        self._tenants.clear()

    # -- observing ---------------------------------------------------------------------

    @property
    def topics(self) -> int:
        """Topics held (per tenant and name)."""
        return len(self._topics)

    @property
    def subscribers(self) -> int:
        """Live subscribers."""
        return self._subscribers

    @property
    def bytes_held(self) -> int:
        """Bytes held in subscriber buffers and histories (once per holder)."""
        return self._buffer_bytes.held + self._history_bytes.held

    @property
    def history_bytes(self) -> int:
        """Bytes held in topic histories."""
        return self._history_bytes.held

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
