"""The two halves every platform connector implements: :class:`Source` and :class:`Sink`.

**Source.** An async iterator of :class:`Inbound` records. Nothing is
committed by reading: the consumer calls :meth:`Source.ack` once it has
processed a record (for Kafka a commit of the next offset, for Redis Streams
``XACK``, for JetStream an explicit ack...), or :meth:`Source.nack` to have
it redelivered later. A connector commits positions only in order per
partition / shard: acking a later record before an earlier one of the same
partition holds the commit back until the earlier one is acked, so a crash
never skips an unprocessed record (it may repeat processed ones: the
consumer's dedup drops them). A source holds at most ``max_in_flight``
unacked records and stops fetching while it does (backpressure reaches the
broker).

**Sink.** :meth:`Sink.send` hands a record over, waiting while the sink's
bounded buffer is full; :meth:`Sink.flush` waits until every record sent so
far is confirmed by the broker, and raises :class:`DeliveryFailed` listing
those that were not (after the connector's own retries); :meth:`Sink.close`
flushes and releases the client. Order is kept per record key.

Both are async context managers (``async with`` opens and closes) and give
``statistics()`` snapshots. Client libraries are imported by each platform's
module only, when it is used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from icefloe.connectors.record import Record
from icefloe.exceptions import IcefloeError

__all__ = [
    "ConnectorStatistics",
    "DeliveryFailed",
    "Inbound",
    "Sink",
    "Source",
]


class DeliveryFailed(IcefloeError):
    """Some records sent to a sink were not confirmed; ``failures`` says which and why."""

    def __init__(self, failures: Sequence[tuple[Record, str]]) -> None:
        self.failures = tuple(failures)
        first = self.failures[0][1] if self.failures else "unknown"
        super().__init__(f"{len(self.failures)} record(s) not delivered; first: {first}")


class Inbound(NamedTuple):
    """One record a :class:`Source` received, with where it came from."""

    record: Record
    #: the platform's name for where the record sits (topic, stream, shard...)
    partition: str
    #: the platform's position of the record in that partition (offset,
    #: sequence number, entry id...), as the connector documents
    position: Any
    #: how many times the platform says it was delivered (1 the first time)
    deliveries: int = 1


class ConnectorStatistics(NamedTuple):
    """A snapshot of a source's or sink's counters."""

    #: records received (source) or sent (sink)
    records: int
    #: records acked (source) or confirmed by the broker (sink)
    confirmed: int
    #: records nacked (source) or that failed delivery (sink)
    failed: int
    #: records received but not acked yet (source) or sent but not confirmed (sink)
    in_flight: int
    #: reconnections after a lost connection
    reconnects: int


@runtime_checkable
class Source(Protocol):
    """Records from a platform, with explicit ack (see the module docstring)."""

    @property
    def name(self) -> str:
        """The platform and what is read, with no secret (``"kafka:orders"``)."""
        ...

    async def __aenter__(self) -> Source: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def __aiter__(self) -> AsyncIterator[Inbound]: ...

    async def ack(self, inbound: Inbound) -> None:
        """The record is processed: its position may be committed."""
        ...

    async def nack(self, inbound: Inbound, reason: str) -> None:
        """The record could not be processed now: have it delivered again."""
        ...

    def statistics(self) -> ConnectorStatistics: ...


@runtime_checkable
class Sink(Protocol):
    """Records to a platform, confirmed by :meth:`flush` (see the module docstring)."""

    @property
    def name(self) -> str:
        """The platform and where it writes, with no secret."""
        ...

    async def __aenter__(self) -> Sink: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def send(self, record: Record) -> None:
        """Hand ``record`` over; waits while the sink's buffer is full."""
        ...

    async def flush(self) -> None:
        """Wait until every record sent so far is confirmed.

        :raises DeliveryFailed: some were not, after retries.
        """
        ...

    async def close(self) -> None:
        """Flush, then release the client. Idempotent."""
        ...

    def statistics(self) -> ConnectorStatistics: ...
