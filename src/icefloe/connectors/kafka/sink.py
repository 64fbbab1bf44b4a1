"""Records to one Kafka topic: :class:`KafkaSink` (see the package docstring)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import Any, Final

from confluent_kafka import KafkaError, Message, Producer, TopicPartition

from icefloe.connectors.kafka.worker import FLUSH_TIMEOUT_S, Worker
from icefloe.connectors.protocol import ConnectorStatistics, DeliveryFailed
from icefloe.connectors.record import Record

__all__ = ["DEFAULT_MAX_BUFFER", "MAX_REPLACEMENTS", "KafkaSink"]

#: records librdkafka's producer queue holds before ``send`` waits
DEFAULT_MAX_BUFFER: Final = 100_000
#: producer replacements one ``flush`` makes before it reports the records failed
MAX_REPLACEMENTS: Final = 5
#: how long a full buffer is given to drain per wait, in seconds
_DRAIN_WAIT_S: Final = 0.05


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
        self._worker = Worker(f"icefloe-kafka-sink-{topic}")
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
