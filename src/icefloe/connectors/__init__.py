"""Broker connectors: chunk streams to and from Kafka, RabbitMQ Streams,
Kinesis, Pub/Sub, Redis Streams and NATS JetStream.

Every platform implements :class:`Source` and :class:`Sink`
(:mod:`icefloe.connectors.protocol`) and moves :class:`Record` values
(:mod:`icefloe.connectors.record`, which also maps a chunk to a record and
back). Each platform lives in its own module and imports its client library
only there, installed by its extra (``pip install icefloe[kafka]``...).
"""

from __future__ import annotations

from icefloe.connectors.protocol import (
    ConnectorStatistics,
    DeliveryFailed,
    Inbound,
    Sink,
    Source,
)
from icefloe.connectors.record import ChunkRecord, Record, chunk_record, record_chunk

__all__ = [
    "ChunkRecord",
    "ConnectorStatistics",
    "DeliveryFailed",
    "Inbound",
    "Record",
    "Sink",
    "Source",
    "chunk_record",
    "record_chunk",
]
