"""Records from Kafka as a consumer group member: :class:`KafkaSource`."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Final, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from icefloe.connectors.kafka.worker import Worker
from icefloe.connectors.protocol import ConnectorStatistics, Inbound
from icefloe.connectors.record import Record
from icefloe.core.acktracker import AckTracker

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "KafkaSource"]

#: records a source hands out unacked before it pauses its partitions
DEFAULT_MAX_IN_FLIGHT: Final = 10_000
#: records fetched per ``consume`` call
FETCH_BATCH: Final = 500
#: how long one ``consume`` call waits for records, in seconds
FETCH_WAIT_S: Final = 0.1
#: librdkafka's name for "every broker connection is lost"
_ALL_BROKERS_DOWN: Final = "_ALL_BROKERS_DOWN"


def _partition_name(topic: str, partition: int) -> str:
    return f"{topic}[{partition}]"


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _headers(msg: Message) -> tuple[tuple[str, bytes], ...]:
    raw = msg.headers()
    if not raw:
        return ()
    # librdkafka hands a list of (name, bytes | None); a null value reads as b"".
    pairs = tuple(raw.items() if isinstance(raw, dict) else raw)
    for _, value in pairs:
        if not isinstance(value, bytes):
            return tuple((name, _as_bytes(value) or b"") for name, value in pairs)
    return cast(tuple[tuple[str, bytes], ...], pairs)


class KafkaSource:
    """Records from Kafka topics as a consumer group member (see the module docstring).

    :param bootstrap: ``bootstrap.servers``.
    :param topics: the topic or topics read.
    :param group_id: the consumer group.
    :param max_in_flight: the most records handed out unacked; >= 1.
    :param commit_interval_s: how often acked offsets are committed.
    :param session_timeout_ms: ``session.timeout.ms``; a restarted member of the
        same group may wait about twice this for its partitions.
    :param read_committed: ``isolation.level`` (default ``read_committed``).
    :param config: more librdkafka settings, applied last.
    :raises ValueError: a bound is out of range.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: str | Iterable[str],
        group_id: str,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        commit_interval_s: float = 0.5,
        session_timeout_ms: int = 10_000,
        read_committed: bool = True,
        config: dict[str, Any] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if commit_interval_s <= 0:
            raise ValueError(f"commit_interval_s must be > 0, got {commit_interval_s}")
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.group_id = group_id
        self._max_in_flight = max_in_flight
        self._commit_interval = commit_interval_s
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(100, session_timeout_ms // 5),
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            "error_cb": self._on_error,
        }
        self._config.update(config or {})
        self._worker = Worker(f"icefloe-kafka-source-{group_id}")
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()
        self._trackers: dict[str, AckTracker[int]] = {}
        self._partitions: dict[str, TopicPartition] = {}
        self._dirty: set[str] = set()
        self._redeliveries: dict[tuple[str, int], int] = {}
        # partition -> the offset a nack sought back to, until it is read again
        self._rewound: dict[str, int] = {}
        self._in_flight = 0
        self._paused = False
        self._acked = asyncio.Event()
        self._last_commit = 0.0
        self._received = 0
        self._confirmed = 0
        self._nacked = 0
        self._reconnects = 0
        self._closed = False

    @property
    def name(self) -> str:
        return f"kafka:{','.join(self.topics)}"

    async def __aenter__(self) -> KafkaSource:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Create the consumer and join the group. Idempotent."""
        if self._consumer is None:
            self._consumer = Consumer(self._config)
            await self._worker.run(self._subscribe, self._consumer)

    def _subscribe(self, consumer: Consumer) -> None:
        consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _client(self) -> Consumer:
        if self._consumer is None or self._closed:
            raise RuntimeError(f"{self.name}: the source is not open")
        return self._consumer

    # -- callbacks, on the worker thread inside consume --

    def _on_error(self, error: KafkaError) -> None:
        # librdkafka's name for "every broker connection is lost"
        if error.name() == _ALL_BROKERS_DOWN:
            self._reconnects += 1

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                name = _partition_name(tp.topic, tp.partition)
                self._trackers[name] = AckTracker()
                self._partitions[name] = TopicPartition(tp.topic, tp.partition)
        if self._paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what is acked before another member takes these partitions;
        # records handed out and not acked will be delivered there again.
        names = {_partition_name(tp.topic, tp.partition) for tp in partitions}
        offsets = self._take_offsets(names)
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException:
                pass  # the new owner redoes these records; dedup drops repeats
        with self._lock:
            for name in names:
                tracker = self._trackers.pop(name, None)
                self._partitions.pop(name, None)
                self._rewound.pop(name, None)
                if tracker is not None:
                    self._in_flight -= tracker.pending
        self._acked.set()

    def _take_offsets(self, names: Iterable[str] | None = None) -> list[TopicPartition]:
        with self._lock:
            chosen = self._dirty if names is None else self._dirty & set(names)
            offsets = self._offsets(chosen)
            self._dirty -= chosen
        return offsets

    def _offsets(self, names: Iterable[str]) -> list[TopicPartition]:
        # With self._lock held: the commit position of each named partition.
        offsets = []
        for name in names:
            tracker, tp = self._trackers.get(name), self._partitions.get(name)
            if tracker is not None and tp is not None and tracker.released is not None:
                # Kafka commits the next offset to read
                offsets.append(TopicPartition(tp.topic, tp.partition, tracker.released + 1))
        return offsets

    # -- reading --

    def __aiter__(self) -> AsyncIterator[Inbound]:
        return self._records()

    async def _records(self) -> AsyncIterator[Inbound]:
        consumer = self._client()
        while not self._closed:
            room = self._max_in_flight - self._in_flight
            if room <= 0:
                await self._wait_for_room(consumer)
                continue
            messages = await self._worker.run(
                consumer.consume, min(room, FETCH_BATCH), FETCH_WAIT_S
            )
            if self._commit_due():
                await self.commit(asynchronous=True)
            for msg in messages:
                inbound = self._accept(msg)
                if inbound is not None:
                    yield inbound

    def _accept(self, msg: Message) -> Inbound | None:
        error = msg.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            return None  # informational (partition EOF...); librdkafka retries the rest
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            return None
        name = _partition_name(topic, partition)
        with self._lock:
            tracker = self._trackers.get(name)
            if tracker is None:
                return None  # revoked while in the worker's hands
            rewound = self._rewound.get(name)
            if rewound is not None:
                # A nack sought back to ``rewound``: records fetched before the
                # seek are skipped until the partition restarts there.
                if offset != rewound:
                    return None
                del self._rewound[name]
            tracker.deliver(offset)
            self._in_flight += 1
            deliveries = self._redeliveries.get((name, offset), 0) + 1
        self._received += 1
        record = Record(_as_bytes(msg.key()), _as_bytes(msg.value()) or b"", _headers(msg))
        return Inbound(record, name, offset, deliveries)

    async def _wait_for_room(self, consumer: Consumer) -> None:
        if not self._paused:
            self._paused = True
            await self._worker.run(consumer.pause, self._assigned())
        self._acked.clear()
        try:
            await asyncio.wait_for(self._acked.wait(), 1.0)
        except TimeoutError:
            pass  # keep serving the group: a rebalance may need us
        if self._in_flight < self._max_in_flight:
            self._paused = False
            await self._worker.run(consumer.resume, self._assigned())
        if self._commit_due():
            await self.commit(asynchronous=True)

    def _assigned(self) -> list[TopicPartition]:
        with self._lock:
            return [TopicPartition(tp.topic, tp.partition) for tp in self._partitions.values()]

    # -- acks --

    async def ack(self, inbound: Inbound) -> None:
        """``inbound`` is processed; its offset is committed once every earlier one is."""
        with self._lock:
            if not self._ack_one(inbound):
                return  # unknown, repeated, or its partition was taken away
        if self._commit_due():
            await self.commit(asynchronous=True)

    def _ack_one(self, inbound: Inbound) -> bool:
        # With self._lock held.
        tracker = self._trackers.get(inbound.partition)
        if tracker is None:
            return False
        held = len(tracker)
        if not tracker.ack(inbound.position):
            return False
        if len(tracker) < held:  # the commit point moved
            self._dirty.add(inbound.partition)
        self._in_flight -= 1
        self._confirmed += 1
        self._redeliveries.pop((inbound.partition, inbound.position), None)
        self._acked.set()
        return True

    async def nack(self, inbound: Inbound, reason: str) -> None:
        """Seek back: ``inbound`` and every later record of its partition come again."""
        del reason  # Kafka keeps no per-record state to put it in
        with self._lock:
            tracker = self._trackers.get(inbound.partition)
            tp = self._partitions.get(inbound.partition)
            if tracker is None or tp is None or inbound.position not in tracker:
                return  # unknown, or acked and released already: nothing to redo
            dropped = tracker.rewind(inbound.position)
            self._in_flight -= dropped
            self._rewound[inbound.partition] = inbound.position
            key = (inbound.partition, inbound.position)
            self._redeliveries[key] = self._redeliveries.get(key, 0) + 1
        self._nacked += 1
        self._acked.set()
        seek = TopicPartition(tp.topic, tp.partition, inbound.position)
        await self._worker.run(self._client().seek, seek)

    def _commit_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_commit < self._commit_interval:
            return False
        self._last_commit = now
        return True

    async def commit(self, *, asynchronous: bool = False) -> None:
        """Commit every acked offset now (``close`` and revokes do this too)."""
        offsets = self._take_offsets()
        if offsets:
            await self._worker.run(self._commit_offsets, offsets, asynchronous)

    def _commit_offsets(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if asynchronous:
            self._client().commit(offsets=offsets, asynchronous=True)
        else:
            self._client().commit(offsets=offsets, asynchronous=False)

    # -- transactions (used by transform) --

    def group_metadata(self) -> object:
        """The consumer group metadata a transaction commits offsets with."""
        return self._client().consumer_group_metadata()

    def settle_in_transaction(self, batch: Sequence[Inbound]) -> list[TopicPartition]:
        """Mark ``batch`` processed and return the offsets a transaction commits for it.

        The offsets are not committed by the source itself.
        """
        with self._lock:
            for inbound in batch:
                self._ack_one(inbound)
            offsets = self._offsets(self._dirty)
            self._dirty.clear()
        return offsets

    async def rewind(self, batch: Sequence[Inbound]) -> None:
        """Have every record of ``batch`` delivered again (after an aborted transaction)."""
        first: dict[str, Inbound] = {}
        for inbound in batch:
            if (
                inbound.partition not in first
                or inbound.position < first[inbound.partition].position
            ):
                first[inbound.partition] = inbound
        for inbound in first.values():
            await self.nack(inbound, "transaction aborted")

    async def close(self) -> None:
        """Commit what is acked, leave the group, release the client. Idempotent."""
        if self._closed:
            return
        try:
            if self._consumer is not None:
                await self.commit()
                await self._worker.run(self._consumer.close)
        finally:
            self._closed = True
            self._consumer = None
            self._worker.shutdown()

    def statistics(self) -> ConnectorStatistics:
        return ConnectorStatistics(
            self._received, self._confirmed, self._nacked, self._in_flight, self._reconnects
        )
