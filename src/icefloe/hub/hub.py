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
* **Topics, offsets and epochs.** A topic is created by the first publish
  to it (even one that then waits or is refused for lack of room) and
  numbers its events with consecutive integers from 0, independent of any
  other topic. It also draws a random ``epoch`` (carried by every event): a
  topic evicted (idle for ``topic_idle_s``) and later created again numbers
  from 0 under a new epoch, and ``subscribe(from_offset=N, epoch=E)``
  raises ``history_gone`` rather than replay the new numbering.
* **History.** Each topic keeps its last ``history_per_topic`` events (and
  at most ``history_bytes_per_topic`` bytes). ``subscribe(from_offset=N)``
  replays from offset N, then continues live with no gap and no duplicate;
  an offset the history no longer covers (or a topic it no longer holds)
  raises ``StreamError(code="history_gone")``.
* **Selective broadcast.** ``publish(..., to=...)`` reaches only some of the
  tenant's subscribers: a collection of subscriber ids, or a predicate over
  :class:`~icefloe.hub.targets.SubscriberInfo`. History keeps the
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

Every buffer is bounded: see :mod:`icefloe.hub.limits` for the hub's and
each tenant's limits, and :mod:`icefloe.core.ring` for the per-subscriber
policies.

* **Tenant budgets.** Each tenant may hold ``max_bytes_per_tenant`` bytes
  and ``max_topics_per_tenant`` topics; at a global limit only a tenant at
  its fair share is refused. Topics idle for ``topic_idle_s`` are evicted.

:class:`Hub` is the public facade of three parts: the publish path
(:mod:`icefloe.hub.publish`, whose methods ``Hub`` inherits, so a publish
costs no forwarding call), the registry of tenants, topics and subscribers
(:mod:`icefloe.hub.registry`, over :mod:`icefloe.hub.topics`) and each
subscriber: its buffer (:mod:`icefloe.hub.subscriber`), its reader
(:mod:`icefloe.hub.subscription`) and who of them receives an event
(:mod:`icefloe.hub.targets`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from icefloe.core.filters import Filter
from icefloe.core.reliability import Reliability
from icefloe.core.ring import Overflow
from icefloe.hub.event import HubEvent, event_size
from icefloe.hub.limits import HubLimits
from icefloe.hub.publish import HubPublisher
from icefloe.hub.registry import HubRegistry
from icefloe.hub.subscriber import SubscriptionStatistics
from icefloe.hub.subscription import HubSubscription

__all__ = ["Hub", "HubStatistics", "TenantUsage"]


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
    #: publishers in line at their topic: those waiting for room and those
    #: queued behind them (a publish does not overtake them)
    queued_publishers: int = 0


class TenantUsage(NamedTuple):
    """What one tenant holds in a hub, against its budgets (see :mod:`icefloe.hub.limits`)."""

    #: topics held for it
    topics: int
    #: bytes held for it: its topics' histories and its subscribers' buffers
    bytes_held: int


class Hub(HubPublisher):
    """Topics with pattern subscriptions, filters, bounded buffers and replay.

    :param limits: the hub's :class:`~icefloe.hub.limits.HubLimits`
        (defaults if None).
    :param clock: monotonic seconds, for topic idleness; injected for tests.
    """

    __slots__ = ()

    def __init__(
        self, limits: HubLimits | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        limits = limits if limits is not None else HubLimits()
        super().__init__(HubRegistry(limits, clock), limits, clock)

    def __repr__(self) -> str:
        registry = self._registry
        return (
            f"Hub(topics={registry.topics}, subscribers={registry.subscribers}, "
            f"closed={registry.closed})"
        )

    @property
    def limits(self) -> HubLimits:
        return self._limits

    @property
    def closed(self) -> bool:
        return self._registry.closed

    # publish() and publish_nowait() are HubPublisher's.

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
        epoch: str | Mapping[str, str] | None = None,
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
        :param epoch: the epoch ``from_offset`` was read under (a str with
            an int offset, ``{topic: epoch}`` with a mapping): a topic
            re-created since (a new epoch) is ``history_gone`` rather than
            a replay of its new numbering. Without it the offset alone is
            trusted.
        :raises ClosedResourceError: the hub is closed.
        :raises TopicError: ``pattern`` (or a ``from_offset`` topic) is invalid.
        :raises FilterError: ``filter`` does not compile.
        :raises ValueError: another argument is out of range, or the id is taken.
        :raises StreamError: ``history_gone``: ``from_offset`` is not retained,
            or the topic's epoch is not ``epoch``; ``overloaded``:
            ``max_subscribers``, the tenant's byte budget, or ``max_bytes_total``
            for a tenant at its fair share; ``limit_exceeded``:
            ``max_subscribers_per_tenant`` or ``max_filter_cost_per_tenant``
            (the tenant's own limits).
        """
        subscriber = self._registry.subscribe(
            pattern,
            tenant=tenant,
            filter=filter,
            buffer=buffer,
            max_bytes=max_bytes,
            overflow=overflow,
            from_offset=from_offset,
            subscriber_id=subscriber_id,
            meta=meta,
            epoch=epoch,
        )
        return HubSubscription(subscriber)

    # -- topics numbered by a log (issues 11 and 12: hub.journal, backplane.topics) --
    async def publish_at(
        self,
        topic: str,
        data: Any = None,
        *,
        tenant: str,
        offset: int,
        epoch: str,
        headers: Mapping[str, Any] | None = None,
        reliability: Reliability | str = Reliability.AT_MOST_ONCE,
    ) -> HubEvent | None:
        """Publish event ``offset`` of epoch ``epoch``, numbered by a log, not here.

        The topic is fitted to it first (:mod:`icefloe.hub.sequence`): a
        new epoch or a gap forgets the history that no longer leads up to
        it; an offset already delivered is skipped (returns None).
        Otherwise as :meth:`publish` (it waits for room the same way).
        Events of one topic must be given in log order, one at a time.
        """
        state, clean, size, target, level = self._prepare(
            topic, data, tenant, headers, None, reliability
        )
        if not state.follow(epoch, offset):
            return None
        if not state.queue:
            outcome = self._deliver(state, data, clean, size, target, level)
            if type(outcome) is HubEvent:
                return outcome
        return await self._publish_waiting(state, data, clean, size, target, level)

    def position(
        self,
        topic: str,
        data: Any = None,
        *,
        tenant: str,
        headers: Mapping[str, Any] | None = None,
    ) -> tuple[str, int]:
        """The (epoch, next offset) of a topic, after checking a publish of
        ``data`` to it as :meth:`publish` would (the topic is created, and
        admitted, if new); nothing is published.

        :raises ClosedResourceError, TopicError, ValueError, EncodeError,
            StreamError: as :meth:`publish`.
        """
        state = self._prepare(topic, data, tenant, headers, None, Reliability.AT_MOST_ONCE)[0]
        return state.epoch, state.next_offset

    def restore(self, events: Sequence[HubEvent], *, age_s: float = 0.0) -> None:
        """Refill a topic's history from a log (at start, before anyone subscribes).

        ``events`` are events of one topic, oldest first (a gap between
        them forgets what came before it); the topic numbers on after the last, and counts as last
        published ``age_s`` seconds ago (for ``topic_idle_s``). The hub's
        history limits apply as to any publish.
        """
        if not events:
            return
        first = events[0]
        state = self._registry.topic_for(first.tenant, first.topic)
        history = state.history
        for event in events:
            # A missing record (trimmed, or corrupt and skipped) is a gap: no
            # resume may cross it.
            if not state.follow(event.epoch, event.offset):
                continue
            if history is not None:
                history.append(event, event_size(event.topic, event.data, event.headers))
            state.next_offset = event.offset + 1
        state.last_used = self._clock() - age_s

    # -- end of topics numbered by a log --

    def close(self) -> None:
        """End every subscriber with ``StreamError("cancelled")`` and refuse new work.

        Subscribers may still read what they had buffered; waiting publishers
        get ``ClosedResourceError``; topic histories are freed. Idempotent.
        """
        self._registry.close()

    async def aclose(self) -> None:
        """Asynchronous :meth:`close`."""
        self.close()

    async def __aenter__(self) -> Hub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def statistics(self) -> HubStatistics:
        """A snapshot of the hub's size, counters and memory held.

        It first evicts a bounded batch of idle topics (see
        :mod:`icefloe.hub.limits`), so that a hub nobody publishes to still
        frees them.

        It visits every live subscriber (their buffers count ``delivered``,
        so that publishing need not) and every topic: meant for metrics, not
        for every event.
        """
        registry = self._registry
        # Metrics read this: idle topics are freed even when nobody publishes.
        registry.sweep()
        return HubStatistics(
            topics=registry.topics,
            subscribers=registry.subscribers,
            published=registry.published_now(),
            delivered=registry.delivered(),
            dropped_oldest=self._dropped_oldest,
            dropped_newest=self._dropped_newest,
            disconnected=self._disconnected,
            bytes_held=registry.bytes_held,
            history_bytes=registry.history_bytes,
            waiting_publishers=self._waiting_publishers,
            closed=registry.closed,
            queued_publishers=registry.queued_publishers(),
        )

    def tenant_usage(self, tenant: str) -> TenantUsage:
        """What ``tenant`` holds now, against ``max_topics_per_tenant`` and
        ``max_bytes_per_tenant`` (zeros for a tenant the hub does not know)."""
        registry = self._registry
        return TenantUsage(registry.tenant_topics(tenant), registry.tenant_bytes(tenant))

    def subscriber_statistics(self, tenant: str | None = None) -> list[SubscriptionStatistics]:
        """Statistics of every live subscriber (of ``tenant``, if given)."""
        return self._registry.subscriber_statistics(tenant)
