"""The hub's topics: creation and LRU order, tenant budgets, idle eviction.

Internal to the hub. :class:`TopicBook` is the half of
:class:`~icefloe.hub.registry.HubRegistry` that keeps topics (the registry
adds subscribers and closing):

* the topics, per tenant and name, least recently published first (the
  order idle topics are evicted in), and the topic published to last
  (:attr:`TopicBook.recent`), which the publish path finds without a
  lookup;
* the count of events published: the recent topic's offsets count its own
  since it became recent, so a publish to it bumps one counter less;
* each tenant's :class:`~icefloe.hub.topic.TenantState` and the bytes held
  for it (its histories, its subscribers' buffers), checked against its
  budgets and, for a tenant at its fair share, the global limits when a
  topic or a subscriber is added (:mod:`icefloe.hub.budget`);
* the eviction of idle topics: a bounded sweep at each admission and each
  statistics call, and as many as a budget needs when one is reached.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from icefloe.core.ring import ByteLedger
from icefloe.core.topics import validate_topic
from icefloe.exceptions import ErrorCode, StreamError
from icefloe.hub.budget import fair_share, no_room, over_limit, over_share
from icefloe.hub.limits import SWEEP_BATCH, HubLimits
from icefloe.hub.topic import TenantState, TopicState

__all__ = ["TopicBook"]


class TopicBook:
    """The topics and tenants of one hub, with their budgets.

    :param limits: the hub's limits.
    :param clock: monotonic seconds, for topic idleness.
    """

    __slots__ = (
        "_clock",
        "_history_bytes",
        "_limits",
        "_orphans",
        "_published",
        "_recent_from",
        "_sweep_after",
        "_tenants",
        "_topics",
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
        while evicted < batch and topics and self._evict_front_if_idle():
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
            if not topics or not self._evict_front_if_idle():
                return False
        return True

    def _evict_front_if_idle(self) -> bool:
        """Evict the least recently published topic if it is idle; whether it was."""
        state = next(iter(self._topics.values()))
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

    # -- budgets ------------------------------------------------------------------------

    def _admit_bytes(self, tenant: str, owner: TenantState | None, topic: str | None) -> None:
        """Evict idle topics to bring ``tenant`` within its byte budget and the hub
        within ``max_bytes_total``, or refuse ``tenant`` (see :mod:`~icefloe.hub.limits`)."""
        if owner is None:
            return  # it holds nothing yet: below any budget and any fair share
        limits = self._limits
        per_tenant, unit = limits.max_bytes_per_tenant, limits.max_event_bytes
        if no_room(owner.held(), per_tenant, unit) and not self._evict_idle(
            lambda: not no_room(owner.held(), per_tenant, unit)
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
        total = self.bytes_held
        if over_share(owner.held(), total, limit, tenants):
            # Evicting frees history bytes only: the buffers' sum is taken once.
            buffers = total - self._history_bytes.held
            histories = self._history_bytes
            self._evict_idle(lambda: buffers + histories.held < limit)
            if over_share(owner.held(), buffers + histories.held, limit, tenants):
                raise StreamError(
                    ErrorCode.OVERLOADED,
                    f"tenant {tenant!r} holds {owner.held()} bytes, its share of the hub for "
                    f"now; topics idle for {limits.topic_idle_s} s are evicted",
                    topic,
                )

    def _tenant_count(self, tenant: str) -> int:
        """Tenants present, counting ``tenant`` (which may be new)."""
        return len(self._tenants) + (tenant not in self._tenants)

    # -- tenants ------------------------------------------------------------------------

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

    # -- observing ----------------------------------------------------------------------

    @property
    def topics(self) -> int:
        """Topics held (per tenant and name)."""
        return len(self._topics)

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
