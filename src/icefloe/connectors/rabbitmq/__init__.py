"""RabbitMQ Streams: :class:`RabbitMQSink` and :class:`RabbitMQSource` over rstream.

Installed by the ``rabbitmq`` extra (``pip install icefloe[rabbitmq]``); the
stream protocol listens on port 5552 once the broker's ``rabbitmq_stream``
plugin is enabled.

**Mapping.** A :class:`~icefloe.connectors.record.Record` becomes one AMQP 1.0
message: ``value`` is its data section, ``headers`` its application
properties (names as strings, values as binary; a name may appear only once,
since application properties are a map), and ``key`` its ``group-id``
property. One RabbitMQ stream is one ordered log, so the order is global:
every record, whatever its key, is read back in the order it was confirmed.

**Sink.** Records are published in batches (``batch_size``, or after
``linger_s``) with publisher confirms; at most ``max_in_flight`` records are
unconfirmed at once and :meth:`RabbitMQSink.send` waits for room. A record the
broker refuses, or whose connection drops before its confirm arrives, is
reported by the next :meth:`RabbitMQSink.flush` as
:class:`~icefloe.connectors.protocol.DeliveryFailed`: it is not re-sent, since a
re-send after later records were confirmed would break the stream's order.
After a dropped connection the next publish connects again.

**Source.** A named consumer (``consumer_name``, required: it is the
reference the broker stores offsets under). On start it asks the broker for
its stored offset and resumes after it; without one it starts where ``start``
says (:class:`StartAt`: first, last, next, an offset or a timestamp). An ack
commits in offset order: the stored offset is the end of the acked prefix,
written every ``commit_every`` acked records and on close (the broker keeps
stored offsets in the stream log itself, so one store per record would be
wasteful). A crash repeats at most the records acked since the last store,
plus those not acked yet; the consumer's dedup drops them. A nacked record is
yielded again, before newer ones, with ``deliveries`` counted up. After a
dropped connection the source subscribes again, with backoff, right after the
last offset it delivered.
"""

from __future__ import annotations

from icefloe.connectors.rabbitmq.amqp import encode_message, message_record
from icefloe.connectors.rabbitmq.options import (
    DEFAULT_RETENTION,
    DEFAULT_STREAM_PORT,
    FROM_FIRST,
    Position,
    StartAt,
    StreamRetention,
)
from icefloe.connectors.rabbitmq.sink import RabbitMQSink
from icefloe.connectors.rabbitmq.source import RabbitMQSource

__all__ = [
    "DEFAULT_RETENTION",
    "DEFAULT_STREAM_PORT",
    "FROM_FIRST",
    "Position",
    "RabbitMQSink",
    "RabbitMQSource",
    "StartAt",
    "StreamRetention",
    "encode_message",
    "message_record",
]
