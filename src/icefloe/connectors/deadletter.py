"""Poison records go to a dead-letter :class:`~icefloe.connectors.protocol.Sink`, with the reason.

A record that can never be processed (it does not decode, its entry lacks a
field, it was delivered ``max_deliveries`` times) must not block its
partition nor loop forever: the consumer hands it to :class:`DeadLetters`,
which sends it unchanged to any sink with three headers added, waits for the
broker to confirm it, and only then may the source ack the original.

========================  ===================================================
header                    value
========================  ===================================================
``icefloe-dead-reason``   why it is dead (UTF-8, at most 500 bytes)
``icefloe-dead-source``   the source's ``name`` (``"redis:orders"``)
``icefloe-dead-position`` the platform position (entry id, offset...) as text
========================  ===================================================
"""

from __future__ import annotations

from typing import Any, NamedTuple

from icefloe.connectors.protocol import Inbound, Sink
from icefloe.connectors.record import Record

__all__ = [
    "DEAD_POSITION_HEADER",
    "DEAD_REASON_HEADER",
    "DEAD_SOURCE_HEADER",
    "DeadLetterStatistics",
    "DeadLetters",
    "dead_record",
]

DEAD_REASON_HEADER = "icefloe-dead-reason"
DEAD_SOURCE_HEADER = "icefloe-dead-source"
DEAD_POSITION_HEADER = "icefloe-dead-position"

#: a reason is cut to this many bytes (an exception text can be long)
MAX_REASON_BYTES = 500


class DeadLetterStatistics(NamedTuple):
    """A snapshot of a :class:`DeadLetters`."""

    #: records dead-lettered (confirmed by the dead-letter sink)
    records: int
    #: the reason of the last one (``""``: none yet)
    last_reason: str


def dead_record(record: Record, reason: str, *, source: str, position: Any) -> Record:
    """``record`` with the dead-letter headers added (its key and value unchanged)."""
    # a bytes position (a Redis entry id) is text already; str() would quote it
    where = position if isinstance(position, bytes) else str(position).encode()
    headers = (
        *record.headers,
        (DEAD_REASON_HEADER, reason.encode()[:MAX_REASON_BYTES]),
        (DEAD_SOURCE_HEADER, source.encode()),
        (DEAD_POSITION_HEADER, where),
    )
    return record._replace(headers=headers)


class DeadLetters:
    """Sends poison records to ``sink``; the caller acks the original afterwards.

    Not a sink itself: it owns no client and does not close ``sink``.
    """

    __slots__ = ("_last", "_records", "_sink")

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._records = 0
        self._last = ""

    async def send(self, inbound: Inbound, reason: str, *, source: str) -> None:
        """Dead-letter ``inbound`` and wait until the sink confirms it.

        :raises DeliveryFailed: the dead-letter sink did not take it; do not
            ack the original then (it will come back).
        """
        record = dead_record(inbound.record, reason, source=source, position=inbound.position)
        await self._sink.send(record)
        await self._sink.flush()
        self._records += 1
        self._last = reason

    def statistics(self) -> DeadLetterStatistics:
        return DeadLetterStatistics(self._records, self._last)
