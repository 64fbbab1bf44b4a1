"""Plain confluent-kafka helpers the Kafka tests share: create a topic, read a whole topic."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from icefloe.connectors import Record

__all__ = ["create_topic", "read_topic"]

#: how long reading a topic to its end may take
READ_TIMEOUT_S = 30.0


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions)]).values():
        future.result(10)


def read_topic(
    bootstrap: str, topic: str, partitions: int, *, isolation: str = "read_committed"
) -> list[Record]:
    """Every record of ``topic`` from offset 0 to the end a reader at ``isolation`` sees.

    With ``read_committed`` the end is the last stable offset: records of a
    transaction still open are not read.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        records: list[Record] = []
        ended: set[int] = set()
        deadline = time.monotonic() + READ_TIMEOUT_S
        while len(ended) < partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                ended.add(msg.partition())
                continue
            records.append(Record(msg.key(), msg.value(), tuple(msg.headers() or ())))
        assert len(ended) == partitions, f"the reader did not reach the end of {topic}"
        return records
    finally:
        consumer.close()
