"""In-memory Source and Sink test doubles for the connector glue tests.

A plain module (pytest puts this folder on sys.path). ``MemorySink`` keeps
what was flushed; ``MemorySource`` hands out a fixed list of records, then
ends, and records acks and nacks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from icefloe.connectors import ConnectorStatistics, Inbound, Record


class MemorySink:
    def __init__(self) -> None:
        self.buffered: list[Record] = []
        self.flushed: list[Record] = []
        self.flushes = 0

    @property
    def name(self) -> str:
        return "memory:sink"

    async def __aenter__(self) -> MemorySink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, record: Record) -> None:
        self.buffered.append(record)

    async def flush(self) -> None:
        self.flushed += self.buffered
        self.buffered = []
        self.flushes += 1

    async def close(self) -> None:
        await self.flush()

    def statistics(self) -> ConnectorStatistics:
        return ConnectorStatistics(
            len(self.flushed) + len(self.buffered), len(self.flushed), 0, len(self.buffered), 0
        )


class MemorySource:
    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.acked: list[int] = []
        self.nacked: list[int] = []

    @property
    def name(self) -> str:
        return "memory:source"

    async def __aenter__(self) -> MemorySource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[Inbound]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Inbound]:
        for position, record in enumerate(self.records):
            yield Inbound(record, "p0", position)

    async def ack(self, inbound: Inbound) -> None:
        self.acked.append(inbound.position)

    async def nack(self, inbound: Inbound, reason: str) -> None:
        self.nacked.append(inbound.position)

    def statistics(self) -> ConnectorStatistics:
        return ConnectorStatistics(len(self.records), len(self.acked), len(self.nacked), 0, 0)
