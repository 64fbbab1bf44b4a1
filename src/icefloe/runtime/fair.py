"""Weighted fair sharing of a node's workers between priority classes.

A flow's entry nodes receive one message per run. When a flood of
low-priority runs fills an entry node's inbox, a FIFO would make a
high-priority run wait behind all of them. :class:`FairQueue` is the inbox's
storage instead: while every queued message has the same
``Headers.priority`` it is a plain deque (no cost), and as soon as two
classes are queued it serves them by deficit round robin
(:class:`~icefloe.core.drr.DeficitRoundRobin`) with weight
``2 ** priority`` (priority clamped to -10..10): a class of priority p gets
twice the share of p - 1, and no class is starved.

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


class FairQueue:
    """A deque-compatible store of messages, fair across priority classes.

    It offers what :class:`~icefloe.runtime.channel.Channel` uses of a deque:
    ``append``, ``popleft``, ``len``, truth, iteration, ``clear`` and ``extend``.
    """

    __slots__ = ("_class", "_drr", "_plain")

    def __init__(self) -> None:
        self._plain: deque[Message] = deque()
        #: the priority of everything in ``_plain``
        self._class = 0
        #: set while two or more classes are queued
        self._drr: DeficitRoundRobin[int, Message] | None = None

    def __len__(self) -> int:
        drr = self._drr
        return len(self._plain) if drr is None else len(drr)

    def __bool__(self) -> bool:
        return len(self) > 0

    @property
    def mixing(self) -> bool:
        """Whether classes are interleaved by weight now (two or more were
        queued since the queue was last empty); False: a plain FIFO deque."""
        return self._drr is not None

    def __iter__(self) -> Iterator[Message]:
        # Arrival order within each class; classes in no particular order.
        if self._drr is None:
            return iter(list(self._plain))
        return iter(self._snapshot())

    def append(self, msg: Message) -> None:
        priority = msg.headers.priority
        drr = self._drr
        if drr is None:
            if not self._plain or priority == self._class:
                self._class = priority
                self._plain.append(msg)
                return
            drr = self._mix()
        drr.push(priority, msg)
        drr.set_weight(priority, priority_weight(priority))

    def popleft(self) -> Message:
        drr = self._drr
        if drr is None:
            return self._plain.popleft()
        _, msg = drr.pop()
        if not drr:
            self._drr = None  # one class again: back to the plain deque
        return msg

    def clear(self) -> None:
        self._plain.clear()
        self._drr = None

    def extend(self, messages: list[Message]) -> None:
        for msg in messages:
            self.append(msg)

    def _mix(self) -> DeficitRoundRobin[int, Message]:
        """Two classes are queued now: move the plain deque into a DRR."""
        drr: DeficitRoundRobin[int, Message] = DeficitRoundRobin(max_items=None)
        drr.set_weight(self._class, priority_weight(self._class))
        for msg in self._plain:
            drr.push(self._class, msg)
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
                drr.set_weight(key, priority_weight(key))
        return items
