"""The hub's side of one subscriber: its bounded buffer and the flow control around it.

A subscriber's buffer is a :class:`~icefloe.core.ring.Ring` of at most
``buffer`` events and ``max_bytes`` bytes with its overflow policy; events
replayed from history on ``subscribe(from_offset=...)`` are read first, from
a separate list taken at subscribe time (it holds references to events the
history already holds).

It exists apart from the reader's handle (:mod:`icefloe.hub.subscription`)
because both sides drive it: the publish path (:mod:`icefloe.hub.publish`)
offers events to the buffer, asks which subscriber a publish must wait for
(:func:`lacking_room`) and parks publishers until the buffer is half
drained; the reader takes events and wakes them. The counting that keeps
reliable events from being dropped lives here, next to the buffer it guards.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, NamedTuple

from icefloe.core.filters import Filter
from icefloe.core.reliability import Reliability
from icefloe.core.ring import Overflow, Ring
from icefloe.core.topics import Pattern
from icefloe.exceptions import IcefloeError, StreamError
from icefloe.hub.event import HubEvent
from icefloe.hub.targets import SubscriberInfo

if TYPE_CHECKING:
    from icefloe.hub.registry import HubRegistry

__all__ = ["SubscriberState", "SubscriptionStatistics", "lacking_room", "park"]

_AT_MOST_ONCE = Reliability.AT_MOST_ONCE


class SubscriptionStatistics(NamedTuple):
    """A snapshot of one subscription."""

    #: the subscriber's id
    subscriber_id: str
    #: its tenant
    tenant: str
    #: the pattern it subscribed with
    pattern: str
    #: its filter's source, if any
    filter: str | None
    #: its overflow policy
    overflow: str
    #: events in its buffer now
    buffered: int
    #: its buffer's capacity, in events
    buffer: int
    #: bytes in its buffer now
    buffered_bytes: int
    #: its buffer's capacity, in bytes
    max_bytes: int
    #: replayed events not yet read
    replay_pending: int
    #: events returned to the reader, replayed ones included
    delivered: int
    #: events evicted unread to make room (``drop_oldest``)
    dropped_oldest: int
    #: events discarded because the buffer was full (``drop_newest``); or
    #: at-most-once events that found a ``drop_oldest`` buffer full of reliable
    #: ones, or a reliable publisher waiting for room in the buffer
    dropped_newest: int
    #: publish attempts that found the buffer full and waited or got ``WouldBlock``
    #: (``block``; or any policy but ``disconnect`` for a reliable event)
    blocked: int
    #: publishers waiting for room in this buffer now
    waiting_publishers: int
    #: why it ended (``closed``, ``overloaded``, ``cancelled``), None while live
    ended: str | None
    #: readers waiting for an event (or the end) now
    waiting_readers: int = 0


class SubscriberState:
    """The hub's side of a subscription; the handle is :class:`HubSubscription`."""

    __slots__ = (
        "blocked",
        "blocking",
        "cause",
        "cut",
        "discarded",
        "filter",
        "info",
        "low_bytes",
        "low_items",
        "pattern",
        "registry",
        "reliable",
        "replay",
        "replayed",
        "ring",
        "room",
        "spared",
        "subscriber_id",
        "tenant",
        "until_wake",
        "waiters",
    )

    def __init__(
        self,
        registry: HubRegistry,
        info: SubscriberInfo,
        pattern: Pattern,
        filter: Filter | None,
        ring: Ring[HubEvent],
    ) -> None:
        #: the registry that attached it, which detaches it (see HubSubscription.close)
        self.registry = registry
        self.info = info
        self.subscriber_id = info.subscriber_id
        self.tenant = info.tenant
        self.pattern = pattern
        self.filter: Callable[[Any], bool] | None = None if filter is None else filter.predicate
        self.ring = ring
        self.blocking = ring.overflow is Overflow.BLOCK
        #: whether a full buffer ends the subscriber even for a reliable event
        self.cut = ring.overflow is Overflow.DISCONNECT
        # At-least-once and exactly-once events in the buffer: while there are
        # any, a drop_oldest buffer drops new at-most-once events instead.
        self.reliable = 0
        #: at-most-once events dropped to keep reliable ones (counted as dropped_newest)
        self.spared = 0
        # Events replayed from history, read before the buffer; only resuming
        # subscribers have one (an empty deque alone costs about 600 bytes).
        self.replay: deque[HubEvent] | None = None
        # Readers parked until an event (or the end) arrives.
        self.waiters: list[asyncio.Future[None]] = []
        # Publishers parked until this buffer has room: of any reliability if
        # overflow=block, else reliable ones only.
        self.room: list[asyncio.Future[None]] = []
        self.cause: IcefloeError | None = None
        # Events read are counted by the buffer (as taken) less those discarded
        # unread when the subscription ended, plus the replayed ones read.
        self.discarded = 0
        self.replayed = 0
        #: publishes that found this buffer full (overflow=block)
        self.blocked = 0
        # Blocked publishers are woken once the buffer is half drained, so a
        # reader and a publisher exchange batches, not single events.
        self.low_items = ring.max_items // 2
        max_bytes = ring.max_bytes
        self.low_bytes: float = max_bytes // 2 if max_bytes is not None else math.inf
        # Takes left before the buffer can be at its low-water mark (see wait_for_room).
        self.until_wake = 0

    def use_filter(self, flt: Filter | None) -> None:
        """Evaluate ``flt``: the tenant's shared copy of this subscriber's filter.

        Subscribers whose filters are one shared object are evaluated once
        per event (:func:`~icefloe.hub.targets.select_targets`).
        """
        self.filter = None if flt is None else flt.predicate

    def wake_readers(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for_room(self) -> None:
        """Wait until this buffer is half drained (or the subscription ends)."""
        # Takes left before the buffer can be at its low-water mark, so that
        # taken() need not look before then. Never more than the real number:
        # takes count it down, evictions too (evicted()); appends, which only
        # delay the mark, leave it be, and taken() then looks at the buffer.
        self.until_wake = len(self.ring) - self.low_items
        await park(self.room)

    def wake_publishers(self) -> None:
        room, self.room = self.room, []
        for waiter in room:
            if not waiter.done():
                waiter.set_result(None)

    def spare(self, size: int) -> bool:
        """Whether an at-most-once event of ``size`` must be dropped to keep room for reliable ones.

        Called only while the buffer holds reliable events or publishers wait
        for room in it. While a reliable publisher waits here (in a buffer
        whose policy is not ``block``, only reliable ones do), the buffer
        has no room for at-most-once events: each one taken in would keep it
        from draining to the low-water mark that wakes the publisher. Else a
        ``drop_oldest`` buffer without room would evict a reliable event.
        Either way the new event is dropped (and counted) instead. Other
        policies never evict.
        """
        if self.room and not self.blocking:
            self.spared += 1
            return True
        ring = self.ring
        if not self.reliable or ring.overflow is not Overflow.DROP_OLDEST or ring.has_room(size):
            return False
        self.spared += 1
        return True

    def evicted(self, count: int) -> None:
        """Count off ``count`` events evicted from the buffer while publishers wait for room.

        Evictions drain the buffer as takes do, and the publishers are woken
        as soon as it is at its low-water mark, whatever drained it. (None
        happen while only reliable publishers wait, see :meth:`spare`, but
        the count must not depend on that.)
        """
        self._drained(count)

    def _drained(self, count: int) -> None:
        """``count`` events left the buffer: wake the publishers at low water."""
        self.until_wake -= count
        ring = self.ring
        if (
            self.until_wake <= 0
            and len(ring) <= self.low_items
            and ring.used_bytes <= self.low_bytes
        ):
            self.wake_publishers()

    def refuse(self, event: HubEvent, size: int) -> SubscriberState:
        """Count a publish of ``event`` that must wait for room here; returns self.

        A ``block`` buffer is offered the event, which it refuses (it has no
        room) and counts as ``would_block``, as it does for the one ``block``
        subscriber of a topic that publishing offers the event to first: the
        counts are the same whichever subscriber that is.
        """
        self.blocked += 1
        if self.blocking:
            self.ring.offer(event, size)
        return self

    def take(self) -> HubEvent | None:
        """The next event to read, or None; the per-event path of every reader."""
        replay = self.replay
        if replay:
            self.replayed += 1
            event = replay.popleft()
            if not replay:
                self.replay = None
            return event
        try:
            event = self.ring.take()
        except IndexError:
            # Empty, so at the low-water mark whatever the count says.
            if self.room:
                self.wake_publishers()
            return None
        if self.reliable or self.room:
            self.taken(event)
        return event

    def taken(self, event: HubEvent) -> None:
        """Count off ``event``, just taken from the buffer.

        Only needed while the buffer holds reliable events or publishers wait
        for room in it; readers call it only then.
        """
        if self.reliable and event.reliability != _AT_MOST_ONCE:
            self.reliable -= 1
        if self.room:
            self._drained(1)

    def discard(self) -> None:
        """Free the buffer and the replay list (the subscription has ended)."""
        self.discarded += len(self.ring.drain())
        self.replay = None
        self.reliable = 0

    def held(self) -> int:
        replay = self.replay
        return len(self.ring) + (len(replay) if replay else 0)

    def statistics(self) -> SubscriptionStatistics:
        ring = self.ring.statistics()
        cause = self.cause
        ended: str | None = None
        if isinstance(cause, StreamError):
            ended = cause.code.value
        elif cause is not None:
            ended = "closed"
        return SubscriptionStatistics(
            subscriber_id=self.subscriber_id,
            tenant=self.tenant,
            pattern=self.pattern.source,
            filter=self.info.filter,
            overflow=ring.overflow.value,
            buffered=ring.used,
            buffer=ring.max_items,
            buffered_bytes=ring.used_bytes,
            max_bytes=ring.max_bytes or 0,
            replay_pending=len(self.replay) if self.replay else 0,
            delivered=ring.taken - self.discarded + self.replayed,
            dropped_oldest=ring.dropped_oldest,
            dropped_newest=ring.dropped_newest + self.spared,
            blocked=self.blocked,
            waiting_publishers=len(self.room),
            ended=ended,
            waiting_readers=len(self.waiters),
        )


def lacking_room(
    targets: Collection[SubscriberState], size: int, reliable: bool
) -> SubscriberState | None:
    """The first of ``targets`` an event of ``size`` must wait for, or None.

    That is a ``block`` subscriber without room for it or, for a reliable
    event, any subscriber without room whose policy would drop it
    (``drop_oldest``, ``drop_newest``); a ``disconnect`` one is cut instead.
    """
    for s in targets:
        if (s.blocking or (reliable and not s.cut)) and not s.ring.has_room(size):
            return s
    return None


async def park(waiters: list[asyncio.Future[None]]) -> None:
    """Wait on a new future in ``waiters`` until it is woken; cancellable.

    Readers park on :attr:`SubscriberState.waiters`, publishers on
    :attr:`SubscriberState.room`. A wake-up (``wake_readers``,
    ``wake_publishers``) takes the whole list off at once; a cancellation
    does not, so the cancelled future is taken off here.
    """
    waiter = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    try:
        await waiter
    finally:
        if not waiter.done():
            waiter.cancel()
        if waiter.cancelled():
            try:
                waiters.remove(waiter)
            except ValueError:
                pass
