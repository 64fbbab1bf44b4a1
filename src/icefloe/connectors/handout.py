"""What a pushing or polling source has read and the consumer has not acked yet.

The RabbitMQ Streams and Kinesis sources read on tasks of their own (a
broker's delivery callback, a reader per shard) and hand records to the
consumer's ``async for``. :class:`Handout` is the meeting point: readers
:meth:`~Handout.put` records, which waits while ``max_in_flight`` are unacked
(so a reader stops and backpressure reaches the broker); the consumer takes
them in order, nacked ones first (a nack puts the record back for another
delivery, its partition's commit point held behind it); an ack returns the
partition's new commit point from :class:`~icefloe.core.acktracker.PartitionAcks`.
Memory: at most ``max_in_flight`` records, ready or handed out.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Generic, TypeVar

from icefloe.connectors.protocol import ConnectorStatistics, Inbound
from icefloe.core.acktracker import PartitionAcks

__all__ = ["Handout"]

P = TypeVar("P", bound=Hashable)


class Handout(Generic[P]):
    """Records read and not acked, at most ``max_in_flight``; nacked ones come first."""

    __slots__ = (
        "_acked",
        "_acks",
        "_again",
        "_changed",
        "_closed",
        "_max_in_flight",
        "_nacked",
        "_ready",
        "_received",
    )

    def __init__(self, max_in_flight: int) -> None:
        self._max_in_flight = max_in_flight
        self._acks: PartitionAcks[P] = PartitionAcks()
        self._ready: deque[Inbound] = deque()
        self._again: deque[Inbound] = deque()
        self._changed = asyncio.Condition()
        self._received = 0
        self._acked = 0
        self._nacked = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    async def put(self, inbound: Inbound, wanted: Callable[[], bool] | None = None) -> bool:
        """Hand ``inbound`` out, waiting while ``max_in_flight`` are unacked.

        ``wanted``, asked once there is room, may still drop the record (a
        duplicate another reader handed out meanwhile); the caller sees the
        outcome before any other reader runs.

        :returns: False, with nothing handed out, once closed or not wanted.
        :raises ValueError: ``inbound``'s position is already outstanding.
        """
        async with self._changed:
            # a reader waiting here reads nothing more: backpressure
            await self._changed.wait_for(
                lambda: self._closed or self._acks.outstanding() < self._max_in_flight
            )
            if self._closed or (wanted is not None and not wanted()):
                return False
            self._acks.deliver(inbound.partition, inbound.position)
            self._ready.append(inbound)
            self._received += 1
            self._changed.notify_all()
        return True

    async def records(self) -> AsyncIterator[Inbound]:
        """Every record put, nacked ones again before newer ones, until closed."""
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self._closed or self._again or self._ready)
                if self._closed:
                    return
                inbound = self._again.popleft() if self._again else self._ready.popleft()
            yield inbound

    async def ack(self, inbound: Inbound) -> P | None:
        """Mark ``inbound`` processed; its partition's new commit point, or ``None``.

        :raises ValueError: ``inbound`` was not handed out, or is acked already.
        """
        committed = self._acks.ack(inbound.partition, inbound.position)
        self._acked += 1
        async with self._changed:
            self._changed.notify_all()  # room for a waiting reader
        return committed

    async def nack(self, inbound: Inbound) -> None:
        """Hand ``inbound`` out again before newer records, its delivery counted."""
        self._nacked += 1
        async with self._changed:
            self._again.append(inbound._replace(deliveries=inbound.deliveries + 1))
            self._changed.notify_all()

    async def close(self) -> bool:
        """Stop handing out and wake every waiter; False if it was closed already."""
        if self._closed:
            return False
        async with self._changed:
            self._closed = True
            self._changed.notify_all()
        return True

    def waiting(self, partition: str) -> int:
        """Records of ``partition`` handed out and not acked."""
        return self._acks.waiting(partition)

    def statistics(self, reconnects: int) -> ConnectorStatistics:
        """The source's counters; ``reconnects`` is the source's own count."""
        return ConnectorStatistics(
            records=self._received,
            confirmed=self._acked,
            failed=self._nacked,
            in_flight=self._acks.outstanding(),
            reconnects=reconnects,
        )
