"""The broadcast hub: topics, pattern subscriptions, replay history, fan-out.

::

    hub = Hub()
    async with hub.subscribe("chat.*.tokens", tenant="acme", filter='data.final == true') as sub:
        await hub.publish("chat.room1.tokens", {"text": "hi", "final": True}, tenant="acme")
        event = await anext(sub)            # HubEvent(topic=..., offset=..., data=...)

Concepts:

* **Tenancy.** Every topic and subscriber belongs to a tenant, and tenants
  never see each other: ``chat.room1`` of tenant ``a`` and of tenant ``b``
  are two topics, with their own offsets and history.
* **Topics and offsets.** A topic is created by the first publish to it
  (even one that then waits or is refused for lack of room) and numbers its
  events with consecutive integers. Its first offset is the number of events
  the hub had published when it was created, so a topic that is evicted and
  later created again never reuses an offset a subscriber may remember.
* **History.** Each topic keeps its last ``history_per_topic`` events (and
  at most ``history_bytes_per_topic`` bytes). ``subscribe(from_offset=N)``
  replays from offset N, then continues live with no gap and no duplicate;
  an offset the history no longer covers (or a topic it no longer holds)
  raises ``StreamError(code="history_gone")``.
* **Selective broadcast.** ``publish(..., to=...)`` reaches only some of the
  tenant's subscribers: a collection of subscriber ids, or a predicate over
  :class:`~icefloe.hub.subscription.SubscriberInfo`. History keeps the
  target, so a replay honours it.
* **Overflow.** Each subscriber's buffer has its own policy:
  ``drop_oldest`` (default), ``drop_newest``, ``disconnect`` (the subscriber
  ends with ``StreamError(code="overloaded")``) or ``block`` (``publish``
  waits for room: at-least-once delivery, with backpressure on the
  publisher; ``publish_nowait`` raises ``WouldBlock`` instead).
* **Reliability.** ``publish(..., reliability=...)``: an ``at_most_once``
  event (the default) meets each subscriber's policy; an ``at_least_once``
  or ``exactly_once`` one is never dropped: ``publish`` waits for room in
  any full ``drop_oldest``, ``drop_newest`` or ``block`` buffer, and a
  ``disconnect`` subscriber is cut (it may resume from the history). A
  ``drop_oldest`` buffer holding reliable events drops a new
  ``at_most_once`` event rather than evict them, and any buffer a reliable
  publisher waits for drops new ``at_most_once`` events until it is woken,
  so that they cannot starve it.
* **Fairness.** Publishers of one topic that must wait queue in order; a
  new publish of that topic does not overtake them.
* **Encode once.** Every subscriber of an event receives the same
  :class:`~icefloe.hub.event.HubEvent`, whose ``encoded(fmt)`` is computed
  once per wire format.
* **Callbacks.** Filters and ``to=`` predicates run inside ``publish``;
  they must be quick and must not call back into the hub.

Every buffer is bounded: see :mod:`icefloe.hub.limits` for the global limits
and :mod:`icefloe.core.ring` for the per-subscriber policies.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

from icefloe.core.filters import Filter, compile_filter
from icefloe.core.messages import NO_META, new_id
from icefloe.core.reliability import Reliability
from icefloe.core.ring import ByteLedger, Outcome, Overflow, Ring
from icefloe.core.topics import Pattern, validate_topic
from icefloe.exceptions import (
    ClosedResourceError,
    EncodeError,
    ErrorCode,
    IcefloeError,
    StreamError,
    WouldBlock,
)
from icefloe.hub.checks import (
    MAX_ID_LENGTH,
    check_headers,
    check_name,
    check_range,
    check_reliability,
    refuse_size,
)
from icefloe.hub.event import ENCODE_FAILURES, HubEvent, event_size, pack
from icefloe.hub.limits import MIB, HubLimits
from icefloe.hub.subscription import (
    HubSubscription,
    NormalTarget,
    SubscriberInfo,
    SubscriberState,
    SubscriptionStatistics,
    Target,
    check_target,
    lacking_room,
    select_targets,
)
from icefloe.hub.topic import TenantState, TopicState, replay

__all__ = ["Hub", "HubStatistics"]

# Bound once: the fan-out loop compares every offer's outcome.
_ACCEPTED = Outcome.ACCEPTED
_DROPPED_OLDEST = Outcome.DROPPED_OLDEST
_DROPPED_NEWEST = Outcome.DROPPED_NEWEST
_AT_MOST_ONCE = Reliability.AT_MOST_ONCE
_now_ns = time.time_ns
_pack = pack
_ENCODE_FAILURES = ENCODE_FAILURES


class HubStatistics(NamedTuple):
    """A snapshot of a hub."""

    #: topics held (per tenant and name)
    topics: int
    #: live subscribers
    subscribers: int
    #: events published (each was given an offset)
    published: int
    #: events placed in subscriber buffers, summed over subscribers
    delivered: int
    #: events evicted unread from subscriber buffers (``drop_oldest``)
    dropped_oldest: int
    #: events not placed because a buffer was full (``drop_newest``)
    dropped_newest: int
    #: subscribers ended for falling behind (``disconnect``)
    disconnected: int
    #: bytes held in subscriber buffers and histories (an event counts once per holder)
    bytes_held: int
    #: of which in topic histories
    history_bytes: int
    #: publishers waiting for room (``block``, or a reliable event)
    waiting_publishers: int
    #: whether the hub is closed
    closed: bool


class Hub:
    """Topics with pattern subscriptions, filters, bounded buffers and replay.

    :param limits: the hub's :class:`~icefloe.hub.limits.HubLimits`
        (defaults if None).
    :param clock: monotonic seconds, for topic idleness; injected for tests.
    """

    __slots__ = (
        "_buffer_bytes",
        "_clock",
        "_closed",
        "_delivered",
        "_disconnected",
        "_dropped_newest",
        "_dropped_oldest",
        "_history_bytes",
        "_limits",
        "_max_event_bytes",
        "_published",
        "_recent",
        "_recent_from",
        "_subscribers",
        "_tenants",
        "_topics",
        "_waiting_publishers",
    )

    def __init__(
        self, limits: HubLimits | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = limits if limits is not None else HubLimits()
        # Read on every publish (limits are frozen).
        self._max_event_bytes = self._limits.max_event_bytes
        self._clock = clock
        self._tenants: dict[str, TenantState] = {}
        # Least recently published first, for eviction.
        self._topics: OrderedDict[tuple[str, str], TopicState] = OrderedDict()
        # The topic published to last (so the last in ``_topics``), or None,
        # and its next offset when it became so (see _published_now).
        self._recent: TopicState | None = None
        self._recent_from = 0
        self._subscribers = 0
        self._closed = False
        # Bytes held in subscriber buffers and in topic histories, kept by the rings.
        self._buffer_bytes = ByteLedger()
        self._history_bytes = ByteLedger()
        # Events published, but for the recent topic's since it became recent,
        # which its offsets count: one counter less to bump on every publish.
        self._published = 0
        # Events placed in the buffers of ended subscribers (live ones count their own).
        self._delivered = 0
        self._dropped_oldest = 0
        self._dropped_newest = 0
        self._disconnected = 0
        self._waiting_publishers = 0

    def __repr__(self) -> str:
        return (
            f"Hub(topics={len(self._topics)}, subscribers={self._subscribers}, "
            f"closed={self._closed})"
        )

    @property
    def limits(self) -> HubLimits:
        return self._limits

    @property
    def closed(self) -> bool:
        return self._closed

    # -- publishing --------------------------------------------------------------------

    def publish_nowait(
        self,
        topic: str,
        data: Any = None,
        *,
        tenant: str,
        headers: Mapping[str, Any] | None = None,
        to: Target | None = None,
        reliability: Reliability | str = Reliability.AT_MOST_ONCE,
    ) -> HubEvent:
        """Publish an event now, or refuse.

        Returns the event delivered (with its offset).

        :raises WouldBlock: a target that must not lose the event has no room
            (a ``block`` subscriber, or for an ``at_least_once`` or
            ``exactly_once`` event any subscriber but a ``disconnect`` one),
            or publishers of this topic are already waiting.
        :raises ClosedResourceError: the hub is closed.
        :raises TopicError: ``topic`` is not a valid topic name.
        :raises ValueError: a bad tenant, headers, ``to`` or ``reliability``,
            or an event over ``max_event_bytes``.
        :raises EncodeError: ``data`` is not encodable.
        :raises StreamError: ``overloaded``: a new topic past ``max_topics``
            or ``max_bytes_total``.
        """
        state, clean, size, target, level = self._prepare(
            topic, data, tenant, headers, to, reliability
        )
        if state.queue:
            raise WouldBlock(f"publishers of topic {topic!r} are waiting for room")
        outcome = self._deliver(state, data, clean, size, target, level)
        if isinstance(outcome, SubscriberState):
            raise WouldBlock(
                f"subscriber {outcome.subscriber_id!r} of topic {topic!r} is full "
                f"(overflow={outcome.ring.overflow.value!r}, reliability={level.value!r})"
            )
        return outcome

    async def publish(
        self,
        topic: str,
        data: Any = None,
        *,
        tenant: str,
        headers: Mapping[str, Any] | None = None,
        to: Target | None = None,
        reliability: Reliability | str = Reliability.AT_MOST_ONCE,
    ) -> HubEvent:
        """Publish an event, waiting while a target that must not lose it is full.

        Returns the event delivered (with its offset). ``headers`` values must
        be str, numbers, bools or None; ``to`` limits delivery to some of the
        tenant's subscribers (ids, or a predicate over ``SubscriberInfo``).

        ``reliability`` says what may happen to the event at a full buffer:
        an ``at_most_once`` event (the default) meets each subscriber's
        overflow policy, and the publish waits only for ``block``
        subscribers; an ``at_least_once`` or ``exactly_once`` event is never
        dropped: the publish waits for room in every full target, whatever
        its policy, except that a ``disconnect`` subscriber is still cut
        (it may resume from the topic's history).

        :raises ClosedResourceError: the hub is or becomes closed.
        :raises TopicError: ``topic`` is not a valid topic name.
        :raises ValueError: a bad tenant, headers, ``to`` or ``reliability``,
            or an event over ``max_event_bytes``.
        :raises EncodeError: ``data`` is not encodable.
        :raises StreamError: ``overloaded``: a new topic past ``max_topics``
            or ``max_bytes_total``.
        """
        state = self._recent
        if (
            state is not None
            and headers is None
            and to is None
            and type(reliability) is Reliability
            and type(topic) is str
            and topic == state.name
            and tenant == state.tenant
        ):
            # The usual publish, checked inline: to the topic published last,
            # which is found without a lookup and is already last in the LRU
            # order; its name and tenant were checked when it was created (a
            # closed hub has no recent topic). The usual payloads, a str or a
            # dict, are sized as event_size would, without a Python call.
            kind = type(data)
            if kind is str:
                size = len(topic) + len(data)
            elif kind is dict:
                try:
                    size = len(topic) + len(_pack(data))
                except _ENCODE_FAILURES as exc:
                    raise EncodeError(f"hub event data cannot be encoded: {exc}") from exc
            else:
                size = event_size(topic, data, NO_META)
            if size > self._max_event_bytes:
                refuse_size(size, self._limits)
            clean: dict[str, Any] = NO_META
            target = None
            level = reliability
        else:
            state, clean, size, target, level = self._prepare(
                topic, data, tenant, headers, to, reliability
            )
        if not state.queue:
            outcome = self._deliver(state, data, clean, size, target, level)
            if type(outcome) is HubEvent:
                return outcome
        return await self._publish_waiting(state, data, clean, size, target, level)

    async def _publish_waiting(
        self,
        state: TopicState,
        data: Any,
        headers: dict[str, Any],
        size: int,
        target: NormalTarget | None,
        level: Reliability,
    ) -> HubEvent:
        loop = asyncio.get_running_loop()
        turn = loop.create_future()
        queue = state.queue
        queue.append(turn)
        try:
            if queue[0] is not turn:
                await turn
            while True:
                if self._closed:
                    raise ClosedResourceError("the hub is closed")
                outcome = self._deliver(state, data, headers, size, target, level)
                if isinstance(outcome, HubEvent):
                    return outcome
                await self._wait_for_room(loop, outcome)
        finally:
            head = queue[0] is turn
            queue.remove(turn)
            if head and queue and not queue[0].done():
                queue[0].set_result(None)

    async def _wait_for_room(self, loop: asyncio.AbstractEventLoop, s: SubscriberState) -> None:
        room = loop.create_future()
        s.park_publisher(room)
        self._waiting_publishers += 1
        try:
            await room
        finally:
            self._waiting_publishers -= 1
            # A wake-up takes the waiter off the list; a cancellation does not.
            if not room.done():
                room.cancel()
            if room.cancelled():
                try:
                    s.room.remove(room)
                except ValueError:
                    pass

    def _prepare(
        self,
        topic: str,
        data: Any,
        tenant: str,
        headers: Mapping[str, Any] | None,
        to: Target | None,
        reliability: Reliability | str,
    ) -> tuple[TopicState, dict[str, Any], int, NormalTarget | None, Reliability]:
        """Check a publish's arguments and find its topic (creating it if new).

        Returns the topic, the clean headers, the event's size, the target
        and the reliability. Nothing changes (no topic is created) unless
        every argument is valid.
        """
        if self._closed:
            raise ClosedResourceError("the hub is closed")
        if type(tenant) is not str or not tenant or len(tenant) > MAX_ID_LENGTH:
            check_name("tenant", tenant)
        clean = NO_META if headers is None else check_headers(headers)
        target = None if to is None else check_target(to)
        level = reliability if type(reliability) is Reliability else check_reliability(reliability)
        if type(topic) is not str:
            validate_topic(topic)
        size = event_size(topic, data, clean)
        if size > self._max_event_bytes:
            refuse_size(size, self._limits)
        return self._topic_for(tenant, topic), clean, size, target, level

    def _topic_for(self, tenant: str, name: str) -> TopicState:
        state = self._recent
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
            owner, tenant, name, self._published_now(), limits, self._clock(), self._history_bytes
        )
        owner.topics += 1
        topics[key] = state
        self._make_recent(state)
        return state

    def _make_recent(self, state: TopicState | None) -> None:
        recent = self._recent
        if recent is not None:
            self._published += recent.next_offset - self._recent_from
        self._recent = state
        self._recent_from = state.next_offset if state is not None else 0

    def _published_now(self) -> int:
        """Events published so far (each was given an offset)."""
        recent = self._recent
        if recent is None:
            return self._published
        return self._published + recent.next_offset - self._recent_from

    def _evict_idle_topic(self) -> bool:
        key, state = next(iter(self._topics.items()))
        if state.queue or self._clock() - state.last_used < self._limits.topic_idle_s:
            return False
        del self._topics[key]
        if state is self._recent:
            self._make_recent(None)
        if state.history is not None:
            state.history.clear()
        owner = state.owner
        owner.topics -= 1
        self._forget_tenant_if_empty(state.tenant, owner)
        return True

    def _deliver(
        self,
        state: TopicState,
        data: Any,
        headers: dict[str, Any],
        size: int,
        target: NormalTarget | None,
        level: Reliability,
    ) -> HubEvent | SubscriberState:
        """Deliver now and return the event, or return a target it must wait for.

        Nothing changes unless the event is delivered: the offset, history and
        buffers are all updated together, after every check (and every ``to``
        predicate) has run. This is the hot path of every publish, hence one
        function with its loops inline.
        """
        if state.generation != state.owner.generation:
            state.route()
        event = HubEvent(
            state.name, state.next_offset, state.tenant, data, headers, _now_ns(), level
        )
        reliable = level is not _AT_MOST_ONCE
        targets: Collection[SubscriberState]
        if target is None and not state.filtered and not reliable:
            # Every subscriber is a target; only ``block`` ones may refuse.
            for s in state.checked:
                if not s.ring.has_room(size):
                    return s.refuse(event, size)
            lead = state.lead
            if lead is not None:
                # A ``block`` buffer's refusal changes nothing: offering is the
                # check (and counts the refusal, as refuse() does for the others).
                if lead.ring.offer(event, size)[0] is not _ACCEPTED:
                    lead.blocked += 1
                    return lead
                if lead.waiters:
                    lead.wake_readers()
            targets = state.rest
        else:
            targets = state.subscribers
            if target is not None or state.filtered:
                targets = select_targets(targets, event, target)
            full = lacking_room(targets, size, reliable)
            if full is not None:
                return full.refuse(event, size)
        state.next_offset += 1
        state.last_used = self._clock()
        if state is not self._recent:
            self._published += 1
        history = state.history
        if history is not None:
            # History.append, inline: it runs on every publish.
            sizes = history.sizes
            if len(sizes) == history.max_items:
                # Appending pushes the oldest out of both deques. Sizes are
                # alike, so the change is small (no int to allocate) or none.
                grown = size - sizes[0]
            else:
                grown = size
            sizes.append(size)
            history.entries.append(event if target is None else (event, target))
            if grown:
                history.grow(grown)
        for s in targets:
            # An at-most-once event must not take the room of reliable ones:
            # those a drop_oldest buffer holds, or one a publisher waits to put in.
            if (s.reliable or s.room) and not reliable and s.spare(size):
                self._dropped_newest += 1
                continue
            result = s.ring.offer(event, size)
            outcome = result[0]
            if outcome is _ACCEPTED:
                if reliable:
                    s.reliable += 1
            elif outcome is _DROPPED_OLDEST:
                self._dropped_oldest += result[1]
                if s.room:
                    s.evicted(result[1])
            elif outcome is _DROPPED_NEWEST:
                self._dropped_newest += 1
                continue
            else:
                self._overflowed(s)
                continue
            if s.waiters:
                s.wake_readers()
        return event

    def _overflowed(self, s: SubscriberState) -> None:
        ring = s.ring
        self._disconnected += 1
        self._end(
            s,
            StreamError(
                ErrorCode.OVERLOADED,
                f"subscriber {s.subscriber_id!r} fell behind: its buffer of {ring.max_items} "
                f"events / {ring.max_bytes} bytes is full (overflow='disconnect')",
                s.pattern.source,
            ),
            keep=False,
        )

    # -- subscribing -------------------------------------------------------------------

    def subscribe(
        self,
        pattern: str,
        *,
        tenant: str,
        filter: str | Filter | None = None,
        buffer: int = 256,
        max_bytes: int | None = None,
        overflow: Overflow | str = Overflow.DROP_OLDEST,
        from_offset: int | Mapping[str, int] | None = None,
        subscriber_id: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> HubSubscription:
        """Subscribe to the topics of ``tenant`` matching ``pattern``.

        :param pattern: a topic, or a pattern with ``*`` (one segment) and a
            trailing ``>`` (one or more segments).
        :param filter: filter source (or a compiled :class:`Filter`); only
            events it selects are delivered.
        :param buffer: events the subscriber's buffer holds, 1..``max_buffer``.
        :param max_bytes: bytes it holds, ``max_event_bytes``..``max_subscriber_bytes``;
            None: 1 MiB, brought within those bounds.
        :param overflow: ``drop_oldest``, ``drop_newest``, ``disconnect`` or ``block``.
        :param from_offset: replay retained history first: an offset (exact
            topic patterns only), or ``{topic: offset}`` for any pattern.
        :param subscriber_id: the id ``to=`` targets; generated if None;
            unique among the tenant's live subscribers.
        :param meta: read-only facts for ``to=`` predicates.
        :raises ClosedResourceError: the hub is closed.
        :raises TopicError: ``pattern`` (or a ``from_offset`` topic) is invalid.
        :raises FilterError: ``filter`` does not compile.
        :raises ValueError: another argument is out of range, or the id is taken.
        :raises StreamError: ``history_gone``: ``from_offset`` is not retained;
            ``overloaded``: ``max_subscribers`` (per tenant) or ``max_bytes_total``.
        """
        if self._closed:
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
        self._admit_subscriber(tenant, owner)
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
        owner = self._tenant(tenant)
        owner.index.add(compiled, s)
        owner.ids[subscriber_id] = s
        owner.generation += 1
        self._subscribers += 1
        return HubSubscription(s)

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

    # -- ending ------------------------------------------------------------------------

    def _end(self, s: SubscriberState, cause: IcefloeError, *, keep: bool) -> None:
        """Detach ``s`` for ``cause``; ``keep`` leaves its buffer to be read."""
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
            self._discard(s)
        s.wake_readers()
        s.wake_publishers()

    def _discard(self, s: SubscriberState) -> None:
        s.discard()

    def _tenant(self, tenant: str) -> TenantState:
        owner = self._tenants.get(tenant)
        if owner is None:
            owner = self._tenants[tenant] = TenantState()
        return owner

    def _forget_tenant_if_empty(self, tenant: str, owner: TenantState) -> None:
        if owner.empty():
            self._tenants.pop(tenant, None)

    def close(self) -> None:
        """End every subscriber with ``StreamError("cancelled")`` and refuse new work.

        Subscribers may still read what they had buffered; waiting publishers
        get ``ClosedResourceError``; topic histories are freed. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._make_recent(None)
        for owner in list(self._tenants.values()):
            for s in list(owner.ids.values()):
                cause = StreamError(ErrorCode.CANCELLED, "the hub was closed", s.pattern.source)
                self._end(s, cause, keep=True)
        for state in self._topics.values():
            for turn in state.queue:
                if not turn.done():
                    turn.set_result(None)
            if state.history is not None:
                state.history.clear()
            state.owner.topics -= 1
        self._topics.clear()
        self._tenants.clear()

    async def aclose(self) -> None:
        """Asynchronous :meth:`close`."""
        self.close()

    async def __aenter__(self) -> Hub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- observing ---------------------------------------------------------------------

    def statistics(self) -> HubStatistics:
        """A snapshot of the hub's size, counters and memory held.

        It visits every live subscriber (their buffers count ``delivered``,
        so that publishing need not): meant for metrics, not for every event.
        """
        return HubStatistics(
            topics=len(self._topics),
            subscribers=self._subscribers,
            published=self._published_now(),
            delivered=self._delivered + self._live_deliveries(),
            dropped_oldest=self._dropped_oldest,
            dropped_newest=self._dropped_newest,
            disconnected=self._disconnected,
            bytes_held=self._buffer_bytes.held + self._history_bytes.held,
            history_bytes=self._history_bytes.held,
            waiting_publishers=self._waiting_publishers,
            closed=self._closed,
        )

    def _live_deliveries(self) -> int:
        # Counted by the live subscribers' buffers, not on every publish.
        return sum(
            s.ring.statistics().accepted
            for owner in self._tenants.values()
            for s in owner.ids.values()
        )

    def subscriber_statistics(self, tenant: str | None = None) -> list[SubscriptionStatistics]:
        """Statistics of every live subscriber (of ``tenant``, if given)."""
        owners = (
            self._tenants.values()
            if tenant is None
            else [o for t, o in self._tenants.items() if t == tenant]
        )
        return [s.statistics() for owner in owners for s in owner.ids.values()]
