"""Weighted fair sharing of a node's workers between priority classes and tenants.

A flow's entry nodes receive one message per run. When a flood of
low-priority runs fills an entry node's inbox, a FIFO would make a
high-priority run wait behind all of them; when one tenant's burst fills
it, another tenant's run would wait behind the whole burst.
:class:`FairQueue` is the inbox's storage instead: while every queued
message has the same ``Headers.priority`` and ``Headers.tenant`` it is a
plain deque (no cost), and as soon as two are queued it serves them by
deficit round robin (:class:`~icefloe.core.drr.DeficitRoundRobin`), keyed by
(priority, tenant). A priority class has weight ``2 ** priority`` (priority
clamped to -10..10), split equally between the tenants queued in it: a
class of priority p gets twice the share of p - 1 however many tenants it
holds, the tenants of one class take turns, and nobody is starved. So a
quiet tenant's run is served within one round of the burst ahead of it.

Only entry nodes use it: inner nodes carry a pipeline's chunks, whose order
and per-chunk cost matter more than their class.

The queue is bounded by its channel (``maxsize``), not here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from icefloe.core.drr import DeficitRoundRobin
from icefloe.core.messages import Message

__all__ = ["FairQueue", "priority_weight"]

#: priorities beyond this are treated as this (weights stay finite and comparable)
PRIORITY_CLAMP = 10


def priority_weight(priority: int) -> float:
    """The DRR weight of a priority class: ``2 ** clamp(priority, -10, 10)``."""
    return 2.0 ** max(-PRIORITY_CLAMP, min(PRIORITY_CLAMP, priority))


#: a DRR key: (priority, tenant)
_Key = tuple[int, str]


def _key(msg: Message) -> _Key:
    headers = msg.headers
    return (headers.priority, headers.tenant)


class FairQueue:
    """A deque-compatible store of messages, fair across priority classes and tenants.

    It offers what :class:`~icefloe.runtime.channel.Channel` uses of a deque:
    ``append``, ``popleft``, ``len``, truth, iteration, ``clear`` and ``extend``.
    """

    __slots__ = ("_backlog", "_class", "_drr", "_plain")

    def __init__(self) -> None:
        self._plain: deque[Message] = deque()
        #: the (priority, tenant) of everything in ``_plain``
        self._class: _Key = (0, "")
        #: set while two or more (priority, tenant) keys are queued
        self._drr: DeficitRoundRobin[_Key, Message] | None = None
        #: the tenants queued in the DRR, by priority (they split its weight)
        self._backlog: dict[int, set[str]] = {}

    def __len__(self) -> int:
        drr = self._drr
        return len(self._plain) if drr is None else len(drr)

    def __bool__(self) -> bool:
        return len(self) > 0

    @property
    def mixing(self) -> bool:
        """Whether classes (or tenants) are interleaved by weight now (two or
        more were queued since the queue was last empty); False: a plain FIFO deque."""
        return self._drr is not None

    def __iter__(self) -> Iterator[Message]:
        # Arrival order within each class; classes in no particular order.
        if self._drr is None:
            return iter(list(self._plain))
        return iter(self._snapshot())

    def append(self, msg: Message) -> None:
        key = _key(msg)
        drr = self._drr
        if drr is None:
            if not self._plain or key == self._class:
                self._class = key
                self._plain.append(msg)
                return
            drr = self._mix()
        self._push(drr, key, msg)

    def popleft(self) -> Message:
        drr = self._drr
        if drr is None:
            return self._plain.popleft()
        key, msg = drr.pop()
        if not drr.queued(key):
            # Forget the drained key (tenants come and go) and give its share
            # of the class back to the class's other tenants.
            drr.remove(key)
            priority, tenant = key
            tenants = self._backlog[priority]
            tenants.discard(tenant)
            if tenants:
                self._reweigh(drr, priority)
            else:
                del self._backlog[priority]
        if not drr:
            self._drr = None  # one key again: back to the plain deque
            self._backlog.clear()
        return msg

    def clear(self) -> None:
        self._plain.clear()
        self._drr = None
        self._backlog.clear()

    def extend(self, messages: list[Message]) -> None:
        for msg in messages:
            self.append(msg)

    def _push(self, drr: DeficitRoundRobin[_Key, Message], key: _Key, msg: Message) -> None:
        priority, tenant = key
        tenants = self._backlog.setdefault(priority, set())
        drr.push(key, msg)
        if tenant not in tenants:
            tenants.add(tenant)
            self._reweigh(drr, priority)

    def _reweigh(self, drr: DeficitRoundRobin[_Key, Message], priority: int) -> None:
        """Split the class's weight equally between the tenants queued in it."""
        tenants = self._backlog[priority]
        weight = priority_weight(priority) / len(tenants)
        for tenant in tenants:
            drr.set_weight((priority, tenant), weight)

    def _mix(self) -> DeficitRoundRobin[_Key, Message]:
        """Two keys are queued now: move the plain deque into a DRR."""
        drr: DeficitRoundRobin[_Key, Message] = DeficitRoundRobin(max_items=None)
        key = self._class
        for msg in self._plain:
            self._push(drr, key, msg)
        self._plain.clear()
        self._drr = drr
        return drr

    def _snapshot(self) -> list[Message]:
        assert self._drr is not None
        drr = self._drr
        items: list[Message] = []
        for key in list(drr.statistics().per_key):
            queued = drr.remove(key)
            items.extend(queued)
            for msg in queued:
                drr.push(key, msg)
            if queued:
                self._reweigh(drr, key[0])
        return items
