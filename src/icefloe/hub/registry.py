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
from icefloe.core.topics import Pattern, validate_topic
from icefloe.exceptions import ClosedResourceError, ErrorCode, IcefloeError, StreamError
from icefloe.hub.budget import fair_share, over_limit, over_share
from icefloe.hub.checks import check_name, check_range
from icefloe.hub.event import HubEvent
from icefloe.hub.limits import MIB, SWEEP_BATCH, HubLimits
from icefloe.hub.subscription import SubscriberInfo, SubscriberState, SubscriptionStatistics
from icefloe.hub.topic import TenantState, TopicState, replay

__all__ = ["HubRegistry"]


class HubRegistry:
    """The tenants, topics and subscribers of one hub.

    :param limits: the hub's limits.
    :param clock: monotonic seconds, for topic idleness.
    """

    __slots__ = (
        "_clock",
        "_delivered",
        "_history_bytes",
        "_limits",
        "_orphans",
        "_published",
        "_recent_from",
        "_subscribers",
        "_sweep_after",
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
        # Bytes held in topic histories, kept by the histories (each tenant
        # also keeps its own, and its subscribers' buffers, see TenantState).
        self._history_bytes = ByteLedger()
        # Buffer ledgers of forgotten tenants whose ended subscribers still
        # hold events to be read (counted in bytes_held until drained).
        self._orphans: set[ByteLedger] = set()
        # No topic can be idle before this time (see sweep).
        self._sweep_after = float("-inf")
        # Events published, but for the recent topic's since it became recent,
        # which its offsets count: one counter less to bump on every publish.
        self._published = 0
        # Events placed in the buffers of ended subscribers (live ones count their own).
        self._delivered = 0

    # -- topics ------------------------------------------------------------------------

    def topic_for(self, tenant: str, name: str) -> TopicState:
        """The topic ``name`` of ``tenant``, made the recent one (created if new).

        :raises TopicError: ``name`` is not a valid topic name.
        :raises StreamError: ``overloaded``: a new topic past the tenant's
            topic or byte budget, or past a global limit for a tenant at
            its fair share (after evicting idle topics).
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
        self._admit_topic(tenant, name)
        owner = self._tenant(tenant)
        limits = self._limits
        state = TopicState(owner, tenant, name, limits, self._clock(), self._history_bytes)
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

    def _admit_topic(self, tenant: str, name: str) -> None:
        """Make room for a new topic of ``tenant`` or refuse it (see :mod:`~icefloe.hub.limits`)."""
        limits = self._limits
        self.sweep()
        owner = self._tenants.get(tenant)
        per_tenant = limits.max_topics_per_tenant
        if (
            owner is not None
            and over_limit(owner.topics, per_tenant)
            and not self._evict_idle(lambda: not over_limit(owner.topics, per_tenant))
        ):
            raise StreamError(
                ErrorCode.OVERLOADED,
                f"tenant {tenant!r} holds its limit of {per_tenant} topics, none idle for "
                f"{limits.topic_idle_s} s",
                name,
            )
        limit = limits.max_topics
        if over_limit(len(self._topics), limit):
            self._evict_idle(lambda: not over_limit(len(self._topics), limit))
            held = 0 if owner is None else owner.topics
            if over_share(held, len(self._topics), limit, self._tenant_count(tenant)):
                raise StreamError(
                    ErrorCode.OVERLOADED,
                    f"tenant {tenant!r} holds {held} topics, its share of the hub for now; "
                    f"topics idle for {limits.topic_idle_s} s are evicted",
                    name,
                )
        self._admit_bytes(tenant, owner, name)

    def sweep(self, batch: int = SWEEP_BATCH) -> int:
        """Evict up to ``batch`` topics idle for ``topic_idle_s``, least recently
        published first; returns how many. Called at each admission and by
        :meth:`icefloe.hub.Hub.statistics`, so idle bytes are freed without
        a publish scanning the topics."""
        now = self._clock()
        if now < self._sweep_after:
            return 0
        evicted = 0
        topics = self._topics
        while evicted < batch and topics and self._evict_front_if_idle(topics):
            evicted += 1
        # Skip the sweeps until the front topic may be idle (publishes only
        # make topics younger); a topic created later is idle no sooner.
        front = next(iter(topics.values()), None) if evicted < batch else None
        if front is None:
            self._sweep_after = now + self._limits.topic_idle_s if evicted < batch else now
        else:
            self._sweep_after = now if front.queue else front.last_used + self._limits.topic_idle_s
        return evicted

    def _evict_idle(self, done: Callable[[], bool]) -> bool:
        """Evict idle topics, least recently published first, until ``done()``;
        whether it is. Any tenant's idle topic goes: idle topics are evicted
        anyway, and the least recently published are the idle ones, so a
        tenant's own are found without a list per tenant (which a publish
        would have to keep in order)."""
        topics = self._topics
        while not done():
            if not topics or not self._evict_front_if_idle(topics):
                return False
        return True

    def _evict_front_if_idle(self, order: Mapping[Any, TopicState]) -> bool:
        state = next(iter(order.values()))
        if state.queue or self._clock() - state.last_used < self._limits.topic_idle_s:
            return False
        self._evict(state)
        return True

    def _evict(self, state: TopicState) -> None:
        """Forget ``state`` and its history (a later publish creates it afresh)."""
        del self._topics[(state.tenant, state.name)]
        owner = state.owner
        owner.topics -= 1
        if state is self.recent:
            self._make_recent(None)
        if state.history is not None:
            state.history.clear()
        self._forget_tenant_if_empty(state.tenant, owner)

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
        self._admit_subscriber(tenant, owner)
        info = SubscriberInfo(
            subscriber_id,
            tenant,
            compiled.source,
            None if flt is None else flt.source,
            NO_META if meta is None else dict(meta),
        )
        s = SubscriberState(self, info, compiled, flt, ring)
        if from_offset is None and epoch is not None:
            raise ValueError("epoch is given only with from_offset")
        if from_offset is not None:
            replayed = replay(self._topics, s, from_offset, epoch)
            if replayed:
                s.replay = deque(replayed)
        owner = self._tenant(tenant, buffers)
        owner.index.add(compiled, s)
        owner.ids[subscriber_id] = s
        owner.generation += 1
        self._subscribers += 1
        return s

    def _admit_subscriber(self, tenant: str, owner: TenantState | None) -> None:
        limits = self._limits
        if limits.max_subscribers is not None and self._subscribers >= limits.max_subscribers:
            raise StreamError(
                ErrorCode.OVERLOADED,
                f"the hub has its limit of {limits.max_subscribers} subscribers",
            )
        per_tenant = limits.max_subscribers_per_tenant
        if per_tenant is not None and owner is not None and len(owner.ids) >= per_tenant:
            raise StreamError(
                ErrorCode.OVERLOADED,
                f"tenant {tenant!r} has its limit of {per_tenant} subscribers",
            )
        self.sweep()
        self._admit_bytes(tenant, owner, None)

    def _admit_bytes(self, tenant: str, owner: TenantState | None, topic: str | None) -> None:
        """Evict idle topics to bring ``tenant`` within its byte budget and the hub
        within ``max_bytes_total``, or refuse ``tenant`` (see :mod:`~icefloe.hub.limits`)."""
        if owner is None:
            return  # it holds nothing yet: below any budget and any fair share
        limits = self._limits
        per_tenant = limits.max_bytes_per_tenant
        if over_limit(owner.held(), per_tenant) and not self._evict_idle(
            lambda: not over_limit(owner.held(), per_tenant)
        ):
            raise StreamError(
                ErrorCode.OVERLOADED,
                f"tenant {tenant!r} holds {owner.held()} bytes in the hub, at its limit of "
                f"{per_tenant}; topics idle for {limits.topic_idle_s} s are evicted",
                topic,
            )
        limit = limits.max_bytes_total
        tenants = self._tenant_count(tenant)
        # The hub's total is summed over tenants: only for a tenant at its fair share.
        if limit is None or owner.held() < fair_share(limit, tenants):
            return
        if over_share(owner.held(), self.bytes_held, limit, tenants):
            self._evict_idle(lambda: self.bytes_held < limit)
            if over_share(owner.held(), self.bytes_held, limit, tenants):
                raise StreamError(
                    ErrorCode.OVERLOADED,
                    f"tenant {tenant!r} holds {owner.held()} bytes, its share of the hub for "
                    f"now; topics idle for {limits.topic_idle_s} s are evicted",
                    topic,
                )

    def _tenant_count(self, tenant: str) -> int:
        """Tenants present, counting ``tenant`` (which may be new)."""
        return len(self._tenants) + (tenant not in self._tenants)

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
        # Its buffer's count of accepted events goes to the hub's ``delivered``.
        self._delivered += s.ring.statistics().accepted
        if not keep:
            s.discard()
        s.wake_readers()
        s.wake_publishers()

    def _tenant(self, tenant: str, buffers: ByteLedger | None = None) -> TenantState:
        owner = self._tenants.get(tenant)
        if owner is None:
            owner = self._tenants[tenant] = TenantState(buffers)
            if buffers is not None:
                self._orphans.discard(buffers)
        return owner

    def _forget_tenant_if_empty(self, tenant: str, owner: TenantState) -> None:
        if owner.empty():
            self._tenants.pop(tenant, None)
            if owner.buffers.held:
                self._orphans.add(owner.buffers)

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
    def topics(self) -> int:
        """Topics held (per tenant and name)."""
        return len(self._topics)

    @property
    def subscribers(self) -> int:
        """Live subscribers."""
        return self._subscribers

    @property
    def bytes_held(self) -> int:
        """Bytes held in subscriber buffers and histories (once per holder).

        It sums the tenants' buffers: meant for admissions past a fair
        share and for metrics, not for every event.
        """
        buffers = sum(owner.buffers.held for owner in self._tenants.values())
        if self._orphans:
            self._orphans = {ledger for ledger in self._orphans if ledger.held}
            buffers += sum(ledger.held for ledger in self._orphans)
        return buffers + self._history_bytes.held

    def tenant_bytes(self, tenant: str) -> int:
        """Bytes held for ``tenant``: its histories and its subscribers' buffers."""
        owner = self._tenants.get(tenant)
        return 0 if owner is None else owner.held()

    def tenant_topics(self, tenant: str) -> int:
        """Topics held for ``tenant``."""
        owner = self._tenants.get(tenant)
        return 0 if owner is None else owner.topics

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
