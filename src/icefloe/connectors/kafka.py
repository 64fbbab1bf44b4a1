"""Kafka: :class:`KafkaSink`, :class:`KafkaSource` and :func:`transform` (exactly once).

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
producer error (the broker forgot the producer id, e.g. it restarted and lost
its state) replaces the producer and sends the unconfirmed records once more:
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
records, and the input offsets were not committed, so the batch is redone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Final, TypeVar, cast

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from icefloe.connectors.protocol import ConnectorStatistics, DeliveryFailed, Inbound
from icefloe.connectors.record import Record

__all__ = ["KafkaSink", "KafkaSource", "transform"]

T = TypeVar("T")

#: records librdkafka's producer queue holds before ``send`` waits
DEFAULT_MAX_BUFFER: Final = 100_000
#: records a source hands out unacked before it pauses its partitions
DEFAULT_MAX_IN_FLIGHT: Final = 10_000
#: records fetched per ``consume`` call
FETCH_BATCH: Final = 500
#: how long one ``consume`` call waits for records, in seconds
FETCH_WAIT_S: Final = 0.1
#: how long ``flush`` / ``close`` wait for the broker, in seconds
FLUSH_TIMEOUT_S: Final = 30.0
_ALL_BROKERS_DOWN: Final = "_ALL_BROKERS_DOWN"
#: producer replacements one ``flush`` makes before it reports the records failed
MAX_REPLACEMENTS: Final = 5
#: how long a full buffer is given to drain per wait, in seconds
_DRAIN_WAIT_S: Final = 0.05


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


class _Worker:
    """One thread that runs a client's blocking calls, one at a time."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


# --------------------------------------------------------------------------- sink


class KafkaSink:
    """Records to one Kafka topic (see the module docstring).

    :param bootstrap: ``bootstrap.servers``.
    :param topic: the topic written to.
    :param idempotent: ``enable.idempotence`` (default on).
    :param transactional_id: makes the sink transactional, for :func:`transform`.
    :param linger_ms: ``linger.ms``, how long librdkafka batches records.
    :param max_buffer: the most records queued unconfirmed, in records
        (``queue.buffering.max.messages``); ``send`` waits past it.
    :param stall_timeout_s: how long ``flush`` waits with records outstanding
        and no delivery report before it replaces the producer and resends them.
    :param config: more librdkafka settings, applied last.
    :raises ValueError: ``max_buffer`` < 1 or ``linger_ms`` < 0.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        idempotent: bool = True,
        transactional_id: str | None = None,
        linger_ms: float = 5.0,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        stall_timeout_s: float = 10.0,
        config: dict[str, Any] | None = None,
    ) -> None:
        if stall_timeout_s <= 0:
            raise ValueError(f"stall_timeout_s must be > 0, got {stall_timeout_s}")
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be >= 1, got {max_buffer}")
        if linger_ms < 0:
            raise ValueError(f"linger_ms must be >= 0, got {linger_ms}")
        self.topic = topic
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": idempotent or transactional_id is not None,
            "linger.ms": linger_ms,
            "queue.buffering.max.messages": max_buffer,
            "error_cb": self._on_error,
        }
        if transactional_id is not None:
            self._config["transactional.id"] = transactional_id
        self._config.update(config or {})
        self._transactional = transactional_id is not None
        self._stall_timeout = stall_timeout_s
        self._worker = _Worker(f"icefloe-kafka-sink-{topic}")
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        # id -> record, for every record sent and not confirmed yet
        self._unconfirmed: dict[int, Record] = {}
        # records accepted by send and not handed to librdkafka yet (at most one
        # per waiting sender, plus what a replaced producer left unconfirmed)
        self._backlog: deque[Record] = deque()
        self._pumping = asyncio.Lock()
        self._next_id = 0
        self._failures: list[tuple[Record, str]] = []
        self._fatal = False
        self._sent = 0
        self._confirmed = 0
        self._failed = 0
        self._reconnects = 0
        self._closed = False

    @property
    def name(self) -> str:
        return f"kafka:{self.topic}"

    async def __aenter__(self) -> KafkaSink:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Create the producer (and, if transactional, fence earlier instances). Idempotent."""
        if self._producer is None:
            self._producer = Producer(self._config)
            if self._transactional:
                await self._worker.run(self._producer.init_transactions, FLUSH_TIMEOUT_S)

    def _client(self) -> Producer:
        if self._producer is None or self._closed:
            raise RuntimeError(f"{self.name}: the sink is not open")
        return self._producer

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = True

    def _on_delivery(self, ident: int, error: KafkaError | None, _msg: Message) -> None:
        # Runs on whichever thread serves librdkafka's queue (poll or flush).
        with self._lock:
            record = self._unconfirmed.get(ident)
            if record is None:
                return  # sent by a replaced producer: the record was queued again
            if error is None:
                del self._unconfirmed[ident]
                self._confirmed += 1
            elif not (error.fatal() or self._fatal):
                # A fatal error keeps the record unconfirmed: it is sent again.
                del self._unconfirmed[ident]
                self._failures.append((record, error.str()))
                self._failed += 1

    async def send(self, record: Record) -> None:
        """Queue ``record``; waits while ``max_buffer`` records are unconfirmed.

        :raises DeliveryFailed: (transactional sinks) the buffer stayed full
            with no delivery report for ``stall_timeout_s``.
        """
        producer = self._client()
        self._sent += 1
        # The common case: nobody waits, so the record goes straight in.
        idle = not (self._backlog or self._pumping.locked() or self._fatal)
        if idle and self._try_produce(producer, record):
            return
        self._backlog.append(record)
        await self._pump()

    def _try_produce(self, producer: Producer, record: Record) -> bool:
        """Hand ``record`` to librdkafka; False when its queue is full."""
        with self._lock:
            ident = self._next_id
            self._next_id += 1
            self._unconfirmed[ident] = record
        try:
            producer.produce(
                self.topic,
                record.value,
                record.key,
                headers=list(record.headers),
                on_delivery=partial(self._on_delivery, ident),
            )
        except BufferError:
            with self._lock:
                del self._unconfirmed[ident]
            return False
        producer.poll(0)
        return True

    async def _pump(self) -> None:
        # One task at a time hands the backlog to librdkafka, oldest first, so
        # records resent after a producer replacement keep their order ahead
        # of newer ones; the others wait on the lock (that is the backpressure).
        async with self._pumping:
            backlog = self._backlog
            progress, since = self._confirmed, time.monotonic()
            while backlog:
                if self._fatal and not self._transactional:
                    self._replace_producer()
                producer = self._client()
                if self._try_produce(producer, backlog[0]):
                    backlog.popleft()
                    continue
                # Full: serve delivery reports until room frees up.
                await self._worker.run(producer.poll, _DRAIN_WAIT_S)
                if self._confirmed != progress:
                    progress, since = self._confirmed, time.monotonic()
                elif time.monotonic() - since > self._stall_timeout:
                    self._stalled(backlog[0])
                    progress, since = self._confirmed, time.monotonic()

    def _stalled(self, record: Record) -> None:
        # A full buffer that no longer drains: the producer lost its state.
        if self._transactional:
            raise DeliveryFailed([(record, "the producer stalled with a full buffer")])
        self._replace_producer()

    async def flush(self) -> None:
        """Wait for every delivery report of records sent so far.

        A producer that stalls or fails fatally is replaced and its unconfirmed
        records sent again, up to :data:`MAX_REPLACEMENTS` times per flush.

        :raises DeliveryFailed: the records that failed (each reported once).
        """
        for _ in range(MAX_REPLACEMENTS + 1):
            await self._pump()
            await self._drain(self._client())
            if not self._fatal or self._transactional:
                break
            self._replace_producer()
        else:
            with self._lock:
                self._fail_unconfirmed("not confirmed after replacing the producer")
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            raise DeliveryFailed(failures)

    async def _drain(self, producer: Producer) -> None:
        # Wait for delivery reports while they keep coming; a stall of
        # ``stall_timeout_s`` with records outstanding counts as a lost producer
        # state (a broker that restarted and forgot the producer id makes
        # librdkafka retry forever with no report at all).
        progress, since = self._confirmed, time.monotonic()
        while await self._worker.run(producer.flush, _DRAIN_WAIT_S * 4) > 0:
            if self._fatal:
                return
            if self._confirmed != progress:
                progress, since = self._confirmed, time.monotonic()
            elif time.monotonic() - since > self._stall_timeout:
                self._fatal = True
                return

    def _replace_producer(self) -> None:
        # The old producer is unusable (its id was fenced or forgotten): purge
        # it and queue every record it left unconfirmed again, in send order,
        # ahead of the backlog.
        old = self._client()
        old.purge()
        with self._lock:
            pending = [record for _, record in sorted(self._unconfirmed.items())]
            self._unconfirmed.clear()
            self._fatal = False
        self._backlog.extendleft(reversed(pending))
        old.poll(0)  # serves the purge reports, which find nothing to update
        self._producer = Producer(self._config)
        self._reconnects += 1

    def _fail_unconfirmed(self, reason: str) -> None:
        # With self._lock held.
        for record in (*self._unconfirmed.values(), *self._backlog):
            self._failures.append((record, reason))
            self._failed += 1
        self._unconfirmed.clear()
        self._backlog.clear()
        self._fatal = False

    # -- transactions (used by transform) --

    async def begin(self) -> None:
        """Begin a transaction (transactional sinks only)."""
        self._client().begin_transaction()

    async def commit(self, offsets: Sequence[TopicPartition], group_metadata: object) -> None:
        """Flush, attach ``offsets`` for the consumer group, commit the transaction.

        :raises KafkaException: the transaction failed; call :meth:`abort`.
        """
        await self._pump()
        producer = self._client()
        await self._drain(producer)
        with self._lock:
            failures, self._failures = self._failures, []
            stalled = self._fatal
        if stalled:
            raise DeliveryFailed([(r, "not confirmed") for r in self._unconfirmed.values()])
        if failures:
            raise DeliveryFailed(failures)
        if offsets:
            await self._worker.run(
                producer.send_offsets_to_transaction, list(offsets), group_metadata, FLUSH_TIMEOUT_S
            )
        await self._worker.run(producer.commit_transaction, FLUSH_TIMEOUT_S)

    async def abort(self) -> None:
        """Abort the open transaction: nothing it produced is ever read committed."""
        await self._worker.run(self._client().abort_transaction, FLUSH_TIMEOUT_S)
        with self._lock:
            self._unconfirmed.clear()
            self._backlog.clear()
            self._fatal = False

    async def close(self) -> None:
        """Flush (outside a transaction), then release the producer. Idempotent."""
        if self._closed:
            return
        try:
            if self._producer is not None and not self._transactional:
                await self.flush()
        finally:
            self._closed = True
            self._producer = None
            self._worker.shutdown()

    def statistics(self) -> ConnectorStatistics:
        with self._lock:
            in_flight = len(self._unconfirmed) + len(self._backlog)
        return ConnectorStatistics(
            self._sent, self._confirmed, self._failed, in_flight, self._reconnects
        )


# --------------------------------------------------------------------------- source


class _Tracker:
    """One partition's delivered-but-uncommitted offsets, released in order."""

    __slots__ = ("acked", "commit_at", "delivered")

    def __init__(self) -> None:
        self.delivered: deque[int] = deque()
        self.acked: set[int] = set()
        #: the offset to commit next (the first one not yet processed), or -1
        self.commit_at = -1

    def deliver(self, offset: int) -> None:
        self.delivered.append(offset)

    def ack(self, offset: int) -> bool:
        """Mark ``offset`` processed; True if the commit point moved."""
        if not self.delivered or offset < self.delivered[0] or offset in self.acked:
            return False
        self.acked.add(offset)
        moved = False
        while self.delivered and self.delivered[0] in self.acked:
            done = self.delivered.popleft()
            self.acked.discard(done)
            self.commit_at = done + 1
            moved = True
        return moved

    def rewind(self, offset: int) -> int:
        """Forget deliveries from ``offset`` on (they come again); how many were dropped."""
        before = len(self.delivered)
        while self.delivered and self.delivered[-1] >= offset:
            self.acked.discard(self.delivered.pop())
        return before - len(self.delivered)


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
        self._worker = _Worker(f"icefloe-kafka-source-{group_id}")
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()
        self._trackers: dict[str, _Tracker] = {}
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
                self._trackers[name] = _Tracker()
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
                    self._in_flight -= len(tracker.delivered)
        self._acked.set()

    def _take_offsets(self, names: Iterable[str] | None = None) -> list[TopicPartition]:
        with self._lock:
            chosen = self._dirty if names is None else self._dirty & set(names)
            offsets = [
                TopicPartition(
                    self._partitions[n].topic,
                    self._partitions[n].partition,
                    self._trackers[n].commit_at,
                )
                for n in chosen
                if n in self._trackers
            ]
            self._dirty -= chosen
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
            tracker = self._trackers.get(inbound.partition)
            if tracker is None or not tracker.ack(inbound.position):
                if tracker is not None and inbound.position in tracker.acked:
                    self._settle((inbound.partition, inbound.position))
                return
            self._dirty.add(inbound.partition)
            self._settle((inbound.partition, inbound.position))
        if self._commit_due():
            await self.commit(asynchronous=True)

    def _settle(self, key: tuple[str, int]) -> None:
        self._in_flight -= 1
        self._confirmed += 1
        self._redeliveries.pop(key, None)
        self._acked.set()

    async def nack(self, inbound: Inbound, reason: str) -> None:
        """Seek back: ``inbound`` and every later record of its partition come again."""
        del reason  # Kafka keeps no per-record state to put it in
        with self._lock:
            tracker = self._trackers.get(inbound.partition)
            tp = self._partitions.get(inbound.partition)
            if tracker is None or tp is None:
                return
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
                tracker = self._trackers.get(inbound.partition)
                if tracker is not None and tracker.ack(inbound.position):
                    self._dirty.add(inbound.partition)
                self._settle((inbound.partition, inbound.position))
            offsets = [
                TopicPartition(
                    self._partitions[n].topic, self._partitions[n].partition, t.commit_at
                )
                for n, t in self._trackers.items()
                if n in self._dirty
            ]
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


# --------------------------------------------------------------------------- transform


async def transform(
    source: KafkaSource,
    sink: KafkaSink,
    fn: Callable[[Record], Awaitable[Sequence[Record]]],
    *,
    batch_size: int = 500,
    batch_wait_s: float = 0.1,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Consume-transform-produce, exactly once: each batch is one transaction.

    For each batch of up to ``batch_size`` records (or what arrived within
    ``batch_wait_s`` of the first), sends ``fn(record)`` for each, then commits
    the outputs and the batch's input offsets together. A failed transaction is
    aborted and its batch read again. Returns when ``stop()`` is true between
    batches; runs until cancelled otherwise.

    :param sink: a sink with a ``transactional_id``, opened.
    :raises ValueError: ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    iterator = aiter(source)
    pending: asyncio.Task[Inbound] | None = None
    try:
        while not stop():
            batch: list[Inbound] = []
            deadline: float | None = None
            while len(batch) < batch_size:
                if pending is None:
                    pending = asyncio.ensure_future(anext(iterator))
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                done, _ = await asyncio.wait({pending}, timeout=timeout)
                if not done:
                    break
                batch.append(pending.result())
                pending = None
                if deadline is None:
                    deadline = time.monotonic() + batch_wait_s
            await _transact(source, sink, fn, batch)
    finally:
        if pending is not None:
            pending.cancel()


async def _transact(
    source: KafkaSource,
    sink: KafkaSink,
    fn: Callable[[Record], Awaitable[Sequence[Record]]],
    batch: Sequence[Inbound],
) -> None:
    await sink.begin()
    try:
        for inbound in batch:
            for out in await fn(inbound.record):
                await sink.send(out)
        offsets = source.settle_in_transaction(batch)
        await sink.commit(offsets, source.group_metadata())
    except (KafkaException, DeliveryFailed):
        await sink.abort()
        await source.rewind(batch)
