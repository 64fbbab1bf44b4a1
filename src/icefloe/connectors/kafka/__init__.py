"""Kafka: :class:`KafkaSink`, :class:`KafkaSource` and :func:`transform` (exactly once).

One module per part: :mod:`~icefloe.connectors.kafka.sink`,
:mod:`~icefloe.connectors.kafka.source`, :mod:`~icefloe.connectors.kafka.transform`
and the worker thread they share, :mod:`~icefloe.connectors.kafka.worker`.

Built on confluent-kafka (librdkafka), installed by ``pip install icefloe[kafka]``.

**Threads.** librdkafka's calls block, so each client gets one worker
thread of its own and every blocking call (``consume``, ``commit``,
``flush``, the transaction calls) runs there, one at a time; the event loop
never blocks. ``confluent_kafka.aio`` does the same with a pool, but it hands
rebalance callbacks back to the event loop, and a revoke must commit the
acked offsets *before* librdkafka gives the partitions away: here the
callback commits synchronously on the worker thread that is inside
``consume``. State shared between that thread and the loop (the per-partition
ack trackers) sits behind one lock.

**Sink.** A record's key is its chunk's ``stream_id``, so a stream stays in
one partition and in order; headers are passed as they are. The producer is
idempotent by default (no duplicate and no reordering from its own
retries). ``send`` waits while librdkafka's queue (``max_buffer`` records) is
full; ``flush`` waits for every delivery report and raises
:class:`~icefloe.connectors.DeliveryFailed` for those that failed. A fatal
producer error, or ``stall_timeout_s`` with records outstanding and no
delivery report (a broker that restarted without its state no longer knows
the producer id, and librdkafka retries without end), replaces the producer
and sends the unconfirmed records again, in their order:
records the old producer had in fact delivered then arrive twice, and the
consumer's dedup drops them.

**Source.** A consumer group member with auto commit off. A record's offset
is committed after it is acked, in order per partition (see
:class:`~icefloe.connectors.Source`); commits are batched (every
``commit_interval_s``) and made synchronously on revoke and close. ``nack``
seeks the partition back to the record, so it and every later record of
that partition are delivered again (Kafka has no per-record redelivery).
At most ``max_in_flight`` records are unacked: past it the source pauses its
partitions and resumes when acks come back.

**Transactions.** :func:`transform` reads a batch, and in one transaction
produces what ``fn`` makes of it and commits the batch's offsets for the
consumer group (``send_offsets_to_transaction``). A crash before the commit
leaves an open transaction that the next producer with the same
``transactional_id`` aborts when it starts; readers with
``isolation.level=read_committed`` (the source's default) never see its
records on a Kafka broker (the ``tansu`` test broker shows them: see
docs/connectors-kafka.md), and the input offsets were not committed, so the
batch is redone.
"""

from __future__ import annotations

from icefloe.connectors.kafka.sink import KafkaSink
from icefloe.connectors.kafka.source import KafkaSource
from icefloe.connectors.kafka.transform import transform

__all__ = ["KafkaSink", "KafkaSource", "transform"]
