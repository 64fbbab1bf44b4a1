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
import heapq
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

from icefloe.core.filters import Filter, compile_filter
from icefloe.core.messages import NO_META, new_id
from icefloe.core.ring import ByteLedger, Outcome, Overflow, Ring
from icefloe.core.topics import Pattern, validate_topic
from icefloe.exceptions import (
    ClosedResourceError,
    ErrorCode,
    IcefloeError,
    StreamError,
    WouldBlock,
)
from icefloe.hub.event import HubEvent, event_size
from icefloe.hub.limits import MIB, HubLimits
from icefloe.hub.subscription import (
    HubSubscription,
    NormalTarget,
    SubscriberInfo,
    SubscriberState,
    SubscriptionStatistics,
    Target,
    check_target,
    wants,
)
from icefloe.hub.topic import TenantState, TopicState

__all__ = ["Hub", "HubStatistics"]

#: the longest subscriber id or tenant name accepted
MAX_ID_LENGTH = 256

# A tuple, not a union: isinstance with ``a | b`` builds the union on every call.
_HEADER_TYPES = (str, int, float, bool)
# Bound once: the fan-out loop compares every offer's outcome.
_ACCEPTED = Outcome.ACCEPTED
_DROPPED_OLDEST = Outcome.DROPPED_OLDEST
_DROPPED_NEWEST = Outcome.DROPPED_NEWEST


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
    #: publishers waiting for room (``block``)
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
        "_published",
        "_subscribers",
        "_tenants",
        "_topics",
        "_waiting_publishers",
    )

    def __init__(
        self, limits: HubLimits | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = limits if limits is not None else HubLimits()
        self._clock = clock
        self._tenants: dict[str, TenantState] = {}
        # Least recently published first, for eviction.
        self._topics: OrderedDict[tuple[str, str], TopicState] = OrderedDict()
        self._subscribers = 0
        self._closed = False
        # Bytes held in subscriber buffers and in topic histories, kept by the rings.
        self._buffer_bytes = ByteLedger()
        self._history_bytes = ByteLedger()
        self._published = 0
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
    ) -> HubEvent:
        """Publish an event now, or refuse.

        Returns the event delivered (with its offset).

        :raises WouldBlock: a matching ``block`` subscriber has no room, or
            publishers of this topic are already waiting.
        :raises ClosedResourceError: the hub is closed.
        :raises TopicError: ``topic`` is not a valid topic name.
        :raises ValueError: a bad tenant, headers or ``to``, or an event over
            ``max_event_bytes``.
        :raises EncodeError: ``data`` is not encodable.
        :raises StreamError: ``overloaded``: a new topic past ``max_topics``
            or ``max_bytes_total``.
        """
        clean, size, target = self._prepare(topic, data, tenant, headers, to)
        state = self._topic_for(tenant, topic)
        if state.queue:
            raise WouldBlock(f"publishers of topic {topic!r} are waiting for room")
        outcome = self._deliver(state, data, clean, size, target)
        if isinstance(outcome, SubscriberState):
            raise WouldBlock(
                f"subscriber {outcome.subscriber_id!r} of topic {topic!r} is full "
                "(overflow='block')"
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
    ) -> HubEvent:
        """Publish an event, waiting while a matching ``block`` subscriber is full.

        Returns the event delivered (with its offset). Without ``block``
        subscribers it never waits. ``headers`` values must be str, numbers,
        bools or None; ``to`` limits delivery to some of the tenant's
        subscribers (ids, or a predicate over ``SubscriberInfo``).

        :raises ClosedResourceError: the hub is or becomes closed.
        :raises TopicError: ``topic`` is not a valid topic name.
        :raises ValueError: a bad tenant, headers or ``to``, or an event over
            ``max_event_bytes``.
        :raises EncodeError: ``data`` is not encodable.
        :raises StreamError: ``overloaded``: a new topic past ``max_topics``
            or ``max_bytes_total``.
        """
        clean, size, target = self._prepare(topic, data, tenant, headers, to)
        state = self._topic_for(tenant, topic)
        if not state.queue:
            outcome = self._deliver(state, data, clean, size, target)
            if type(outcome) is HubEvent:
                return outcome
        return await self._publish_waiting(state, data, clean, size, target)

    async def _publish_waiting(
        self,
        state: TopicState,
        data: Any,
        headers: dict[str, Any],
        size: int,
        target: NormalTarget | None,
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
                outcome = self._deliver(state, data, headers, size, target)
                if isinstance(outcome, HubEvent):
                    return outcome
                room = loop.create_future()
                outcome.room.append(room)
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
                            outcome.room.remove(room)
                        except ValueError:
                            pass
        finally:
            head = queue[0] is turn
            queue.remove(turn)
            if head and queue and not queue[0].done():
                queue[0].set_result(None)

    def _prepare(
        self,
        topic: object,
        data: Any,
        tenant: object,
        headers: Mapping[str, Any] | None,
        to: Target | None,
    ) -> tuple[dict[str, Any], int, NormalTarget | None]:
        """Check a publish's arguments; its clean headers, size and target."""
        if self._closed:
            raise ClosedResourceError("the hub is closed")
        # The common case first, checked inline: this runs on every publish.
        if type(tenant) is not str or not tenant or len(tenant) > MAX_ID_LENGTH:
            _check_name("tenant", tenant)
        clean = NO_META if headers is None else _check_headers(headers)
        target = None if to is None else check_target(to)
        if type(topic) is not str:
            validate_topic(topic)
        size = event_size(topic, data, clean)  # type: ignore[arg-type]
        limit = self._limits.max_event_bytes
        if size > limit:
            raise ValueError(f"an event of {size} bytes exceeds max_event_bytes ({limit})")
        return clean, size, target

    def _topic_for(self, tenant: str, name: str) -> TopicState:
        key = (tenant, name)
        topics = self._topics
        state = topics.get(key)
        if state is not None:
            topics.move_to_end(key)
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
            owner, tenant, name, self._published, limits, self._clock(), self._history_bytes
        )
        owner.topics += 1
        topics[key] = state
        return state

    def _evict_idle_topic(self) -> bool:
        key, state = next(iter(self._topics.items()))
        if state.queue or self._clock() - state.last_used < self._limits.topic_idle_s:
            return False
        del self._topics[key]
        if state.history is not None:
            state.history.drain()
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
    ) -> HubEvent | SubscriberState:
        """Deliver now and return the event, or return the ``block`` subscriber lacking room.

        Nothing changes unless the event is delivered: the offset, history and
        buffers are all updated together, after every check (and every ``to``
        predicate) has run.
        """
        if state.generation != state.owner.generation:
            state.route()
        event = HubEvent(state.name, state.next_offset, state.tenant, data, headers, time.time_ns())
        targets: Collection[SubscriberState] = state.subscribers
        if target is not None or state.filtered:
            targets = [s for s in targets if wants(s, event, target)]
        if state.blocking:
            for s in targets:
                if s.blocking and not s.ring.has_room(size):
                    s.blocked += 1
                    return s
        state.next_offset += 1
        state.last_used = self._clock()
        self._published += 1
        if state.history is not None:
            state.history.offer((event, target), size)
        if targets:
            self._fan_out(event, size, targets)
        return event

    def _fan_out(self, event: HubEvent, size: int, targets: Collection[SubscriberState]) -> None:
        accepted = 0
        for s in targets:
            result = s.ring.offer(event, size)
            outcome = result[0]
            if outcome is _ACCEPTED:
                accepted += 1
            elif outcome is _DROPPED_OLDEST:
                accepted += 1
                self._dropped_oldest += result[1]
            elif outcome is _DROPPED_NEWEST:
                self._dropped_newest += 1
                continue
            else:
                self._overflowed(s)
                continue
            if s.waiters:
                s.wake_readers()
        self._delivered += accepted

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
        _check_name("tenant", tenant)
        compiled = Pattern(pattern)
        flt = filter if isinstance(filter, Filter) or filter is None else compile_filter(filter)
        limits = self._limits
        _check_range("buffer", buffer, 1, limits.max_buffer)
        if max_bytes is None:
            max_bytes = max(limits.max_event_bytes, min(MIB, limits.max_subscriber_bytes))
        _check_range("max_bytes", max_bytes, limits.max_event_bytes, limits.max_subscriber_bytes)
        ring: Ring[HubEvent] = Ring(buffer, max_bytes, overflow, ledger=self._buffer_bytes)
        owner = self._tenants.get(tenant)
        if subscriber_id is None:
            subscriber_id = new_id()
        else:
            _check_name("subscriber_id", subscriber_id)
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
            replayed = self._replay(s, from_offset)
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

    def _replay(self, s: SubscriberState, from_offset: int | Mapping[str, int]) -> list[HubEvent]:
        pattern = s.pattern
        if isinstance(from_offset, Mapping):
            starts = dict(from_offset)
            for name, offset in starts.items():
                validate_topic(name)
                if not pattern.matches(name):
                    raise ValueError(
                        f"from_offset names topic {name!r}, which pattern "
                        f"{pattern.source!r} does not match"
                    )
                _check_range("from_offset", offset, 0, None)
        else:
            _check_range("from_offset", from_offset, 0, None)
            if not pattern.is_exact:
                raise ValueError(
                    f"an int from_offset needs an exact topic, not the pattern "
                    f"{pattern.source!r}; pass {{topic: offset}} instead"
                )
            starts = {pattern.source: from_offset}
        runs = [self._retained(s, name, offset) for name, offset in starts.items()]
        if len(runs) == 1:
            return runs[0]
        # Topics are interleaved in publish order, as a live subscriber saw them.
        return list(heapq.merge(*runs, key=lambda event: event.ts))

    def _retained(self, s: SubscriberState, name: str, offset: int) -> list[HubEvent]:
        state = self._topics.get((s.tenant, name))
        if state is None:
            raise StreamError(
                ErrorCode.HISTORY_GONE,
                f"topic {name!r} holds no history to resume from offset {offset}",
                name,
            )
        return state.retained(s, offset)

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
        if not keep:
            self._discard(s)
        s.wake_readers()
        s.wake_publishers()

    def _discard(self, s: SubscriberState) -> None:
        ring = s.ring
        ring.drain()
        s.replay = None

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
        for owner in list(self._tenants.values()):
            for s in list(owner.ids.values()):
                cause = StreamError(ErrorCode.CANCELLED, "the hub was closed", s.pattern.source)
                self._end(s, cause, keep=True)
        for state in self._topics.values():
            for turn in state.queue:
                if not turn.done():
                    turn.set_result(None)
            if state.history is not None:
                state.history.drain()
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
        """A snapshot of the hub's size, counters and memory held."""
        return HubStatistics(
            topics=len(self._topics),
            subscribers=self._subscribers,
            published=self._published,
            delivered=self._delivered,
            dropped_oldest=self._dropped_oldest,
            dropped_newest=self._dropped_newest,
            disconnected=self._disconnected,
            bytes_held=self._buffer_bytes.held + self._history_bytes.held,
            history_bytes=self._history_bytes.held,
            waiting_publishers=self._waiting_publishers,
            closed=self._closed,
        )

    def subscriber_statistics(self, tenant: str | None = None) -> list[SubscriptionStatistics]:
        """Statistics of every live subscriber (of ``tenant``, if given)."""
        owners = (
            self._tenants.values()
            if tenant is None
            else [o for t, o in self._tenants.items() if t == tenant]
        )
        return [s.statistics() for owner in owners for s in owner.ids.values()]


def _check_name(what: str, value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise ValueError(
            f"{what} must be a non-empty str of at most {MAX_ID_LENGTH} characters, got {value!r}"
        )


def _check_range(what: str, value: object, low: int, high: int | None) -> None:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{what} must be an int {bound}, got {value!r}")


def _check_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    if headers is None:
        return NO_META
    if not isinstance(headers, Mapping):
        raise ValueError(f"headers must be a mapping, got {type(headers).__name__}")
    if not headers:
        return NO_META
    clean: dict[str, Any] = {}
    for name, value in headers.items():
        if not isinstance(name, str):
            raise ValueError(f"header names must be str, got {name!r}")
        if value is not None and not isinstance(value, _HEADER_TYPES):
            raise ValueError(
                f"header {name!r} must be a str, number, bool or None, got {type(value).__name__}"
            )
        clean[name] = value
    return clean
