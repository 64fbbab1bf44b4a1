"""The hub's publish path: check, deliver to every target at once, or wait in line.

Internal to the hub: :class:`HubPublisher` is the half of
:class:`~icefloe.hub.Hub` that publishes (``Hub`` adds subscribing, closing
and statistics); the topics and subscribers it publishes to are kept by
:class:`~icefloe.hub.registry.HubRegistry`.

A publish either delivers now (the offset, the history and every target's
buffer are updated together, after every check has run) or names the
subscriber it must wait for. Publishers of one topic that must wait queue
in order (``TopicState.queue``); the head parks until that subscriber's
buffer is half drained, then tries again.

This is the hot path of the hub: :meth:`HubPublisher.publish` checks the
usual publish inline and :meth:`HubPublisher._deliver` is one function with
its loops inline. ``Hub`` inherits these methods rather than forwarding to
them, so that a publish costs no extra call (measured with ``bench/run.py
--only hub_fan_out_1``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from icefloe.core.messages import NO_META
from icefloe.core.reliability import Reliability
from icefloe.core.ring import Outcome
from icefloe.core.topics import validate_topic
from icefloe.exceptions import ClosedResourceError, EncodeError, ErrorCode, StreamError, WouldBlock
from icefloe.hub.checks import (
    MAX_ID_LENGTH,
    check_headers,
    check_name,
    check_reliability,
    refuse_size,
)
from icefloe.hub.event import ENCODE_FAILURES, HubEvent, event_size, pack
from icefloe.hub.limits import HubLimits
from icefloe.hub.registry import HubRegistry
from icefloe.hub.subscriber import SubscriberState, lacking_room
from icefloe.hub.targets import NormalTarget, Target, check_target, select_targets
from icefloe.hub.topic import TopicState

__all__ = ["HubPublisher"]

# Bound once: the fan-out loop compares every offer's outcome.
_ACCEPTED = Outcome.ACCEPTED
_DROPPED_OLDEST = Outcome.DROPPED_OLDEST
_DROPPED_NEWEST = Outcome.DROPPED_NEWEST
# The only level of rank 0: ``level is not _AT_MOST_ONCE`` is ``level.rank > 0``
# without a property call on every publish.
_AT_MOST_ONCE = Reliability.AT_MOST_ONCE
_now_ns = time.time_ns
_pack = pack
_ENCODE_FAILURES = ENCODE_FAILURES


class HubPublisher:
    """Publishing to the topics of a :class:`~icefloe.hub.registry.HubRegistry`.

    :param registry: the topics and subscribers published to.
    :param limits: the hub's limits.
    :param clock: monotonic seconds, stamped on a topic at each publish.
    """

    __slots__ = (
        "_clock",
        "_disconnected",
        "_dropped_newest",
        "_dropped_oldest",
        "_limits",
        "_max_event_bytes",
        "_registry",
        "_waiting_publishers",
    )

    def __init__(
        self, registry: HubRegistry, limits: HubLimits, clock: Callable[[], float]
    ) -> None:
        self._registry = registry
        self._limits = limits
        # Read on every publish (limits are frozen).
        self._max_event_bytes = limits.max_event_bytes
        self._clock = clock
        self._dropped_oldest = 0
        self._dropped_newest = 0
        self._disconnected = 0
        self._waiting_publishers = 0

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
        """Publish an event now, or refuse; the arguments are those of :meth:`publish`.

        Returns the event delivered (with its offset).

        :raises WouldBlock: a target that must not lose the event has no room
            (a ``block`` subscriber, or for an ``at_least_once`` or
            ``exactly_once`` event any subscriber but a ``disconnect`` one),
            or publishers of this topic are already waiting.
        :raises ClosedResourceError, TopicError, ValueError, EncodeError,
            StreamError: as :meth:`publish` (the hub being closed, a bad
            argument, a new topic past a limit).
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
        state = self._registry.recent
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
        turn = asyncio.get_running_loop().create_future()
        queue = state.queue
        queue.append(turn)
        registry = self._registry
        try:
            if queue[0] is not turn:
                await turn
            while True:
                if registry.closed:
                    raise ClosedResourceError("the hub is closed")
                outcome = self._deliver(state, data, headers, size, target, level)
                if isinstance(outcome, HubEvent):
                    return outcome
                await self._wait_for_room(outcome)
        finally:
            head = queue[0] is turn
            queue.remove(turn)
            if head and queue and not queue[0].done():
                queue[0].set_result(None)

    async def _wait_for_room(self, s: SubscriberState) -> None:
        self._waiting_publishers += 1
        try:
            await s.wait_for_room()
        finally:
            self._waiting_publishers -= 1

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
        registry = self._registry
        if registry.closed:
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
        return registry.topic_for(tenant, topic), clean, size, target, level

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
            state.name,
            state.next_offset,
            state.tenant,
            data,
            headers,
            _now_ns(),
            level,
            state.epoch,
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
        if state is not self._registry.recent:
            # Rare: a publisher that waited while another topic was published to.
            self._registry.count_publish()
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
        self._registry.end(
            s,
            StreamError(
                ErrorCode.OVERLOADED,
                f"subscriber {s.subscriber_id!r} fell behind: its buffer of {ring.max_items} "
                f"events / {ring.max_bytes} bytes is full (overflow='disconnect')",
                s.pattern.source,
            ),
            keep=False,
        )
