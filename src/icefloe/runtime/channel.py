"""A bounded, awaitable FIFO used for node inboxes and the flow's egress.

It exists instead of ``asyncio.Queue`` for two reasons: the hot path wants a
non-raising "take if there is one" (:meth:`Channel.take`), and icefloe's errors and
statistics must be its own, never ``asyncio.QueueFull``.

Limit: ``maxsize`` items (>= 1). At the limit :meth:`Channel.send` waits and
:meth:`Channel.send_nowait` raises :class:`~icefloe.exceptions.WouldBlock`.
Closing wakes every waiter: senders get ``ClosedResourceError``, receivers
drain what is buffered and then get ``EndOfStream``.

:class:`AdaptiveChannel` (inner node inboxes) adds an adaptive window: its
effective capacity moves within ``[floor, maxsize]`` from the consumer's
queue latency, estimated by Little's law as depth / drain rate (the drain
rate is the count of takes between two samples over the monotonic time
between them, so no item carries a timestamp). It samples only when a
sender finds the channel full, and feeds a
:class:`~icefloe.core.flowwindow.FlowWindow`, so its rules are those of a
stream's window (docs/qos.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from time import monotonic
from typing import Any, Final, Generic, NamedTuple, Protocol, TypeVar

from icefloe.core.flowwindow import FlowWindow, FlowWindowPolicy, FlowWindowStatistics
from icefloe.exceptions import ClosedResourceError, EndOfStream, WouldBlock

__all__ = ["AdaptiveChannel", "Channel", "ChannelStatistics"]

T = TypeVar("T")

#: returned by ``take`` when nothing is buffered; never a user value
EMPTY: Final[Any] = object()


class ChannelStatistics(NamedTuple):
    """A snapshot of one channel's occupancy."""

    #: items buffered now
    used: int
    #: the channel's capacity in items
    maxsize: int
    #: tasks blocked in ``send``
    waiting_senders: int
    #: tasks blocked in ``receive``
    waiting_receivers: int
    #: whether ``close`` was called
    closed: bool


class Store(Protocol[T]):
    """What a channel needs of its storage: a deque, or a fair queue (runtime/fair.py)."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[T]: ...
    def append(self, item: T, /) -> None: ...
    def popleft(self) -> T: ...
    def clear(self) -> None: ...
    def extend(self, items: list[T], /) -> None: ...


class Channel(Generic[T]):
    """Bounded multi-producer, multi-consumer FIFO of items.

    ``store`` replaces the FIFO order (default: a deque) by another, such
    as the priority-fair queue of entry nodes; the bound stays ``maxsize``.
    """

    __slots__ = (
        "_base_got",
        "_base_t",
        "_cap",
        "_closed",
        "_every",
        "_fw",
        "_getters",
        "_got",
        "_items",
        "_maxsize",
        "_putters",
    )

    def __init__(self, maxsize: int, store: Store[T] | None = None) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
            raise ValueError(f"maxsize must be an int >= 1, got {maxsize!r}")
        self._maxsize = maxsize
        #: the effective capacity: a sender waits at it; maxsize unless adaptive
        self._cap = maxsize
        self._items: Store[T] = deque() if store is None else store
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        # The adaptive window (AdaptiveChannel): its controller, items taken
        # so far, the last sample's time (-1.0: none, or the consumer found
        # the channel empty since) and count, and takes between samples.
        self._fw: FlowWindow | None = None
        self._got = 0
        self._base_t = -1.0
        self._base_got = 0
        self._every = 1

    def __len__(self) -> int:
        return len(self._items)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def capacity(self) -> int:
        """The effective capacity: ``maxsize``, or the adaptive window (<= maxsize)."""
        return self._cap

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            len(self._items), self._maxsize, len(self._putters), len(self._getters), self._closed
        )

    def window_statistics(self) -> FlowWindowStatistics | None:
        """The adaptive window (effective capacity, signals, adjustments); None: fixed."""
        fw = self._fw
        return None if fw is None else fw.statistics()

    # -- sending ---------------------------------------------------------------

    def send_nowait(self, item: T) -> None:
        """Buffer ``item`` now.

        :raises ClosedResourceError: the channel is closed.
        :raises WouldBlock: the channel is full.
        """
        if self._closed:
            raise ClosedResourceError("channel is closed")
        if len(self._items) >= self._cap and (self._fw is None or not self._full()):
            raise WouldBlock("channel is full")
        self._items.append(item)
        if self._getters:
            _wake_one(self._getters)

    async def send(self, item: T) -> None:
        """Buffer ``item``, waiting while the channel is full.

        :raises ClosedResourceError: the channel is or becomes closed.
        """
        items = self._items
        # Fast path: room and nobody queued ahead of us (keeps FIFO fairness).
        if len(items) < self._cap and not self._putters and not self._closed:
            items.append(item)
            if self._getters:
                _wake_one(self._getters)
            return
        woken = False
        while True:
            if self._closed:
                raise ClosedResourceError("channel is closed")
            # A woken sender has its turn even if others queued behind it.
            if len(items) < self._cap and (woken or not self._putters):
                items.append(item)
                if self._getters:
                    _wake_one(self._getters)
                return
            # Full at the effective capacity: the adaptive window's sample point.
            if self._fw is not None and len(items) >= self._cap and self._full():
                continue  # the window grew: there may be room now
            fut = asyncio.get_running_loop().create_future()
            if woken:
                self._putters.appendleft(fut)
            else:
                self._putters.append(fut)
            try:
                await fut
            except BaseException:
                # A cancelled sender that had been woken passes the wake-up on.
                _discard(self._putters, fut)
                if fut.done() and not fut.cancelled() and len(items) < self._cap:
                    _wake_one(self._putters)
                raise
            woken = True

    # -- receiving -------------------------------------------------------------

    def take(self) -> T:
        """The next item, or ``EMPTY``; the hot path's non-raising form."""
        if self._items:
            item = self._items.popleft()
            if self._putters:
                _wake_one(self._putters)
            return item
        return EMPTY  # type: ignore[no-any-return]

    def receive_nowait(self) -> T:
        """Take the next item now.

        :raises WouldBlock: nothing is buffered.
        :raises EndOfStream: the channel is closed and drained.
        """
        item = self.take()
        if item is not EMPTY:
            return item
        if self._closed:
            raise EndOfStream("channel is closed and drained")
        raise WouldBlock("channel is empty")

    async def receive(self) -> T:
        """Take the next item, waiting while the channel is empty.

        :raises EndOfStream: the channel is closed and drained.
        """
        while True:
            item = self.take()
            if item is not EMPTY:
                return item
            if self._closed:
                raise EndOfStream("channel is closed and drained")
            # The consumer idles: the time until the next sample is not drain time.
            self._base_t = -1.0
            fut = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                _discard(self._getters, fut)
                if fut.done() and not fut.cancelled() and self._items:
                    _wake_one(self._getters)
                raise

    def _full(self) -> bool:
        """A sender found the channel full: sample the adaptive window.

        Returns whether the window grew with room to spare. Called only with
        a controller (``_fw``), on the slow path: one clock read per
        ``_every`` takes at most (an eighth of the window), not per item.
        """
        fw = self._fw
        assert fw is not None
        got = self._got
        depth = len(self._items)
        if self._base_t < 0.0:
            # First sample, or the consumer went idle since the last: that
            # interval says nothing about its drain rate, so it starts a new
            # one. Items did not queue behind a busy consumer then, which
            # counts as a sample under target (rounds, so the window can
            # grow back; FlowWindow's drain-rate rule bounds the growth).
            now = self._base_t = monotonic()
            self._base_got = got
            if self._cap == self._maxsize:
                return False
            return self._observe(fw, now, 0.0, got, depth)
        drained = got - self._base_got
        if drained < self._every:
            return False
        now = monotonic()
        elapsed = now - self._base_t
        self._base_t = now
        self._base_got = got
        if elapsed <= 0.0:
            return False
        # Little's law: depth items drained at drained / elapsed per second wait
        # about depth * elapsed / drained; the consumer was busy all along.
        latency = depth * elapsed / drained
        if latency <= fw.quiet_latency:
            return False  # the common case: a consumer keeping up at the full window
        return self._observe(fw, now, latency, got, depth)

    def _observe(self, fw: FlowWindow, now: float, latency: float, got: int, depth: int) -> bool:
        before = self._cap
        window = fw.observe(now, latency, got, got + depth)
        if window == before:
            return False
        self._cap = window
        self._every = max(1, window >> 3)
        if window < before:
            return False
        # Senders queued behind the new room get their turn.
        for _ in range(window - max(before, depth)):
            _wake_one(self._putters)
        return depth < window

    def close(self) -> None:
        """Refuse new items; wake every waiter. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for waiters in (self._getters, self._putters):
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(None)

    def discard(self, predicate: Callable[[T], bool]) -> int:
        """Remove buffered items matching ``predicate``; how many were removed.

        O(buffered items): meant for rare operations such as cancelling a run.
        """
        kept = [item for item in self._items if not predicate(item)]
        removed = len(self._items) - len(kept)
        if removed:
            self._items.clear()
            self._items.extend(kept)
            for _ in range(removed):
                _wake_one(self._putters)
        return removed

    def clear(self) -> list[T]:
        """Remove and return everything buffered, waking blocked senders."""
        drained = list(self._items)
        self._items.clear()
        while self._putters:
            fut = self._putters.popleft()
            if not fut.done():
                fut.set_result(None)
        return drained


class AdaptiveChannel(Channel[T]):
    """A FIFO channel whose capacity adapts within ``[floor, maxsize]``.

    It starts at ``maxsize``; a consumer whose queue latency (depth / drain
    rate) goes over the policy's target shrinks it, and one that keeps up
    grows it back. It never exceeds ``maxsize``, so memory stays bounded as
    for a fixed channel; items are never dropped or reordered, a sender just
    waits at the smaller capacity. Taking an item costs one counter
    increment more than in :class:`Channel`.
    """

    __slots__ = ()

    def __init__(self, maxsize: int, policy: FlowWindowPolicy) -> None:
        super().__init__(maxsize)
        self._fw = FlowWindow(maxsize, policy)
        self._every = max(1, maxsize >> 3)

    def take(self) -> T:
        if self._items:
            self._got += 1
            item = self._items.popleft()
            if self._putters:
                _wake_one(self._putters)
            return item
        return EMPTY  # type: ignore[no-any-return]


def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        fut = waiters.popleft()
        if not fut.done():
            fut.set_result(None)
            return


def _discard(waiters: deque[asyncio.Future[None]], fut: asyncio.Future[None]) -> None:
    try:
        waiters.remove(fut)
    except ValueError:
        pass
