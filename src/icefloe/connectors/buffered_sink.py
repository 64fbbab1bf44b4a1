"""The life cycle of a sink that buffers in this process over its caller's client.

:class:`~icefloe.connectors.nats.NatsSink` and
:class:`~icefloe.connectors.redis_streams.RedisStreamsSink` take a client
the caller opened and closes: opening them does nothing, closing them
flushes what they hold and then refuses more. What they differ in is how
records sent so far are settled (PubAcks waited for, a batch written):
each says it in :meth:`BufferedSink._settle`. Sinks that own their client
(Kafka, Kinesis, RabbitMQ, Pub/Sub) open and release it, and keep their own
life cycle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

from icefloe.connectors.protocol import DeliveryFailed
from icefloe.connectors.record import Record
from icefloe.connectors.undelivered import Undelivered

__all__ = ["BufferedSink"]


class BufferedSink(ABC):
    """``flush``, ``close`` and ``async with`` for a sink over its caller's client."""

    def __init__(self) -> None:
        self._failures = Undelivered()
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _refuse_if_closed(self, record: Record) -> None:
        if self._closed:
            raise DeliveryFailed([(record, "sink is closed")])

    @abstractmethod
    async def _settle(self) -> None:
        """Confirm every record sent so far, or add it to ``self._failures``."""

    async def flush(self) -> None:
        """Wait until every record sent so far is confirmed.

        :raises DeliveryFailed: records that failed since the last flush.
        """
        await self._settle()
        self._failures.report()

    async def close(self) -> None:
        """Flush, then refuse more records. Idempotent; the client stays open.

        :raises DeliveryFailed: as :meth:`flush`.
        """
        if not self._closed:
            try:
                await self.flush()
            finally:
                self._closed = True
