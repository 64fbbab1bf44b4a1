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

import asyncio
import contextlib
import enum
import functools
import random
from collections.abc import AsyncIterator
from typing import Any, Final, NamedTuple

from rstream import (
    AMQPMessage,
    ConfirmationStatus,
    Consumer,
    ConsumerOffsetSpecification,
    MessageContext,
    OffsetNotFound,
    OffsetType,
    Producer,
    amqp_decoder,
)
from rstream.recovery import BackOffRecoveryStrategy

from icefloe.connectors.handout import Handout
from icefloe.connectors.protocol import ConnectorStatistics, Inbound
from icefloe.connectors.record import Record
from icefloe.connectors.undelivered import Undelivered
from icefloe.exceptions import InvalidState

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

#: the port of RabbitMQ's stream protocol
DEFAULT_STREAM_PORT: Final = 5552
#: response code rstream reports when a connection dropped before the confirm
_CONNECTION_LOST: Final = -1


class Position(enum.Enum):
    """Where a consumer starts when the broker has no stored offset for it."""

    FIRST = OffsetType.FIRST
    LAST = OffsetType.LAST
    NEXT = OffsetType.NEXT
    OFFSET = OffsetType.OFFSET
    TIMESTAMP = OffsetType.TIMESTAMP


class StartAt(NamedTuple):
    """A starting point: ``StartAt(Position.OFFSET, 42)``, ``StartAt(Position.TIMESTAMP, ms)``.

    ``value`` is an offset for ``OFFSET``, milliseconds since the epoch for
    ``TIMESTAMP``, and ignored otherwise.
    """

    position: Position = Position.FIRST
    value: int = 0

    def specification(self) -> ConsumerOffsetSpecification:
        if self.value < 0:
            raise ValueError(f"start value must be >= 0, got {self.value}")
        if self.position in (Position.OFFSET, Position.TIMESTAMP):
            return ConsumerOffsetSpecification(self.position.value, self.value)
        return ConsumerOffsetSpecification(self.position.value, None)


class StreamRetention(NamedTuple):
    """The retention arguments a missing stream is created with.

    ``None`` leaves the broker's default for that argument.
    """

    #: ``max-length-bytes``: the stream's size limit, in bytes
    max_length_bytes: int | None = 1 << 30
    #: ``max-age``: e.g. ``"7D"``, ``"12h"``
    max_age: str | None = None
    #: ``stream-max-segment-size-bytes``: the size of one segment file
    max_segment_size_bytes: int | None = None

    def arguments(self) -> dict[str, Any]:
        pairs = {
            "max-length-bytes": self.max_length_bytes,
            "max-age": self.max_age,
            "stream-max-segment-size-bytes": self.max_segment_size_bytes,
        }
        return {name: value for name, value in pairs.items() if value is not None}


#: the retention a missing stream is created with: 1 GiB, no age limit
DEFAULT_RETENTION: Final = StreamRetention()
#: start at the stream's first record
FROM_FIRST: Final = StartAt()


class _Connection(NamedTuple):
    host: str
    port: int
    username: str
    password: str
    vhost: str


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


# AMQP 1.0 encoding of the three sections a record needs. rstream's own
# encoder walks every value generically in Python and costs several times
# more per message than the sink's whole remaining work; these sections have
# fixed shapes, so they are written directly (and read back by rstream's
# decoder, which the tests check).
_PROPERTIES: Final = b"\x00\x53\x73"
_APPLICATION_PROPERTIES: Final = b"\x00\x53\x74"
_DATA: Final = b"\x00\x53\x75"
_NULL: Final = b"\x40"
#: ``group-id`` is field 10 of the properties list
_GROUP_ID_FIELD: Final = 10


def _string(text: str) -> bytes:
    raw = text.encode()
    if len(raw) < 256:
        return b"\xa1" + len(raw).to_bytes(1, "big") + raw
    return b"\xb1" + len(raw).to_bytes(4, "big") + raw


def _binary(raw: bytes) -> bytes:
    if len(raw) < 256:
        return b"\xa0" + len(raw).to_bytes(1, "big") + raw
    return b"\xb0" + len(raw).to_bytes(4, "big") + raw


def encode_message(record: Record) -> bytes:
    """``record`` as an AMQP 1.0 message (see the module docstring for the mapping).

    :raises ValueError: a header name repeats, or the key is not UTF-8.
    """
    parts: list[bytes] = []
    if record.key is not None:
        try:
            group = _string(record.key.decode())
        except UnicodeDecodeError:
            raise ValueError("record key must be UTF-8 for RabbitMQ (it is the group-id)") from None
        fields = _NULL * _GROUP_ID_FIELD + group
        count = _GROUP_ID_FIELD + 1
        parts += [_PROPERTIES, b"\xd0", (len(fields) + 4).to_bytes(4, "big")]
        parts += [count.to_bytes(4, "big"), fields]
    if record.headers:
        names = [name for name, _ in record.headers]
        if len(set(names)) != len(names):
            raise ValueError(
                "record headers repeat a name; RabbitMQ application properties are a map"
            )
        pairs = b"".join(_string(name) + _binary(value) for name, value in record.headers)
        parts += [_APPLICATION_PROPERTIES, b"\xd1", (len(pairs) + 4).to_bytes(4, "big")]
        parts += [(2 * len(names)).to_bytes(4, "big"), pairs]
    parts += [_DATA, _binary(record.value)]
    return b"".join(parts)


def _text(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def message_record(message: AMQPMessage) -> Record:
    """The record a decoded AMQP message carries (the reverse of :func:`encode_message`)."""
    body = message.body
    if isinstance(body, list):
        # several data sections: the publisher split the value; join it back
        body = b"".join(_text(part) for part in body)
    properties = message.properties
    group = None if properties is None else properties.group_id
    headers = tuple(
        (_text(name).decode(errors="replace"), _text(value))
        for name, value in (message.application_properties or {}).items()
    )
    return Record(None if group is None else _text(group), _text(body), headers)


class RabbitMQSink:
    """Publishes records to one RabbitMQ stream (see the module docstring).

    :param stream: the stream's name; created with ``retention`` if missing
        and ``create`` is true.
    :param max_in_flight: the most records sent but not confirmed; ``send``
        waits at the limit.
    :param batch_size: records per publish frame.
    :param linger_s: how long a partial batch waits for more records, in seconds.
    :param confirm_timeout_s: how long :meth:`flush` waits for confirms before
        reporting the rest as failed.
    :raises ValueError: a limit is out of range.
    """

    def __init__(
        self,
        stream: str,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_STREAM_PORT,
        username: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        create: bool = True,
        retention: StreamRetention = DEFAULT_RETENTION,
        max_in_flight: int = 10_000,
        batch_size: int = 200,
        linger_s: float = 0.005,
        confirm_timeout_s: float = 30.0,
    ) -> None:
        for name, value in (
            ("max_in_flight", max_in_flight),
            ("batch_size", batch_size),
            ("linger_s", linger_s),
            ("confirm_timeout_s", confirm_timeout_s),
        ):
            _positive(name, value)
        self._stream = stream
        self._connection = _Connection(host, port, username, password, vhost)
        self._create = create
        self._retention = retention
        self._max_in_flight = max_in_flight
        self._batch_size = min(batch_size, max_in_flight)
        self._linger_s = linger_s
        self._confirm_timeout_s = confirm_timeout_s
        self._producer: Producer | None = None
        self._batch: list[tuple[Record, bytes]] = []
        self._linger: asyncio.Task[None] | None = None
        self._publish_lock = asyncio.Lock()
        self._unconfirmed: dict[int, Record] = {}
        # confirms that arrived before send_batch returned their ids
        self._early: dict[int, ConfirmationStatus] = {}
        self._changed = asyncio.Condition()
        self._failures = Undelivered()
        self._sent = 0
        self._confirmed = 0
        self._failed = 0
        self._reconnects = 0
        # bumped when a connection drops: confirms of older publishes are void
        self._generation = 0
        self._broken = False
        self._closed = False

    @property
    def name(self) -> str:
        return f"rabbitmq:{self._stream}"

    async def _on_connection_closed(self, info: object) -> None:
        # The publisher died with its connection: no confirm can come for what
        # it sent, so those records fail now; the next publish reconnects.
        if self._closed:
            return
        self._reconnects += 1
        self._broken = True
        self._generation += 1
        lost = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        self._early.clear()
        await self._fail(lost, "connection lost before the broker confirmed")

    async def _connect(self) -> Producer:
        c = self._connection
        producer = Producer(
            c.host,
            c.port,
            username=c.username,
            password=c.password,
            vhost=c.vhost,
            on_close_handler=self._on_connection_closed,
            # the sink reconnects itself, on its next publish
            recovery_strategy=BackOffRecoveryStrategy(False),
        )
        await producer.start()
        return producer

    async def _reconnect(self) -> None:
        old, self._producer = self._producer, None
        if old is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await old.close()
        self._producer = await self._connect()
        self._broken = False

    async def __aenter__(self) -> RabbitMQSink:
        producer = await self._connect()
        self._producer = producer
        if self._create:
            await producer.create_stream(
                self._stream, arguments=self._retention.arguments(), exists_ok=True
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, record: Record) -> None:
        """Queue ``record`` for the next batch; waits while ``max_in_flight`` are unconfirmed.

        :raises ValueError: the record cannot be carried (repeated header name,
            non-UTF-8 key).
        """
        if self._producer is None and not self._broken:
            raise InvalidState(f"{self.name} is not open: use it in `async with`")
        message = encode_message(record)  # refuses a record the broker could not carry, here
        async with self._changed:
            await self._changed.wait_for(
                lambda: len(self._unconfirmed) + len(self._batch) < self._max_in_flight
            )
        self._batch.append((record, message))
        self._sent += 1
        if len(self._batch) >= self._batch_size:
            await self._publish()
        elif self._linger is None:
            self._linger = asyncio.create_task(self._publish_later())

    async def _publish_later(self) -> None:
        await asyncio.sleep(self._linger_s)
        self._linger = None
        await self._publish()

    async def _publish(self) -> None:
        # one publisher at a time, so batches reach the broker in send order
        async with self._publish_lock:
            batch, self._batch = self._batch, []
            if not batch:
                return
            generation = self._generation
            try:
                if self._broken or self._producer is None:
                    await self._reconnect()
                assert self._producer is not None
                ids = await self._producer.send_batch(
                    self._stream,
                    [message for _, message in batch],
                    on_publish_confirm=functools.partial(self._on_confirm, generation),
                )
            except Exception as exc:
                reason = f"publish failed: {type(exc).__name__}: {exc}"
                await self._fail([record for record, _ in batch], reason)
                return
            if generation != self._generation:
                # the connection dropped while this batch was being written
                reason = "connection lost before the broker confirmed"
                await self._fail([record for record, _ in batch], reason)
                return
            # confirms for these ids may already have arrived: only keep the rest
            for publishing_id, (record, _) in zip(sorted(ids), batch, strict=True):
                if publishing_id not in self._early:
                    self._unconfirmed[publishing_id] = record
                else:
                    self._settle(record, self._early.pop(publishing_id))
            async with self._changed:
                self._changed.notify_all()

    async def _on_confirm(self, generation: int, status: ConfirmationStatus) -> None:
        if generation != self._generation:
            return  # its record was failed when the connection dropped
        record = self._unconfirmed.pop(status.message_id, None)
        if record is None:
            # the confirm beat send_batch's return: settle it once the id is known
            self._early[status.message_id] = status
            return
        self._settle(record, status)
        async with self._changed:
            self._changed.notify_all()

    def _settle(self, record: Record, status: ConfirmationStatus) -> None:
        if status.is_confirmed:
            self._confirmed += 1
            return
        self._failed += 1
        if status.response_code == _CONNECTION_LOST:
            reason = "connection lost before the broker confirmed"
        else:
            reason = f"broker refused the record (response code {status.response_code})"
        self._failures.add(record, reason)

    async def _fail(self, batch: list[Record], reason: str) -> None:
        self._failed += len(batch)
        self._failures.add_all(batch, reason)
        async with self._changed:
            self._changed.notify_all()

    async def flush(self) -> None:
        """Publish the partial batch and wait for every confirm.

        :raises DeliveryFailed: some records were refused, lost with their
            connection, or not confirmed within ``confirm_timeout_s``.
        """
        await self._publish()
        try:
            async with asyncio.timeout(self._confirm_timeout_s), self._changed:
                await self._changed.wait_for(lambda: not self._unconfirmed)
        except TimeoutError:
            waited = list(self._unconfirmed.values())
            self._unconfirmed.clear()
            await self._fail(waited, f"no confirm within {self._confirm_timeout_s} s")
        self._failures.report()

    async def close(self) -> None:
        """Flush, then close the connection. Idempotent.

        :raises DeliveryFailed: as :meth:`flush`.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            await self.flush()
        finally:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                await producer.close()

    def statistics(self) -> ConnectorStatistics:
        return ConnectorStatistics(
            records=self._sent,
            confirmed=self._confirmed,
            failed=self._failed,
            in_flight=len(self._unconfirmed) + len(self._batch),
            reconnects=self._reconnects,
        )


class RabbitMQSource:
    """Reads one RabbitMQ stream as a named consumer (see the module docstring).

    :param stream: the stream's name; created with ``retention`` if missing
        and ``create`` is true.
    :param consumer_name: the reference the broker stores this consumer's
        offset under; required, non-empty.
    :param start: where to begin when there is no stored offset, or when
        ``resume`` is false.
    :param resume: start after the broker's stored offset when it has one.
    :param max_in_flight: the most records delivered and not acked; the source
        stops granting the broker credit at the limit.
    :param commit_every: store the offset after this many more records were
        acked in order (and always on close).
    :raises ValueError: ``consumer_name`` is empty or a limit is out of range.
    """

    def __init__(
        self,
        stream: str,
        *,
        consumer_name: str,
        start: StartAt = FROM_FIRST,
        resume: bool = True,
        host: str = "127.0.0.1",
        port: int = DEFAULT_STREAM_PORT,
        username: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        create: bool = True,
        retention: StreamRetention = DEFAULT_RETENTION,
        max_in_flight: int = 1000,
        commit_every: int = 500,
        initial_credit: int = 10,
    ) -> None:
        if not consumer_name:
            raise ValueError("consumer_name must be non-empty (offsets are stored under it)")
        for name, value in (
            ("max_in_flight", max_in_flight),
            ("commit_every", commit_every),
            ("initial_credit", initial_credit),
        ):
            _positive(name, value)
        start.specification()  # validate now
        self._stream = stream
        self._consumer_name = consumer_name
        self._start = start
        self._resume = resume
        self._connection = _Connection(host, port, username, password, vhost)
        self._create = create
        self._retention = retention
        self._commit_every = commit_every
        self._initial_credit = initial_credit
        self._consumer: Consumer | None = None
        self._handout: Handout[int] = Handout(max_in_flight)
        self._committed: int | None = None
        self._stored: int | None = None
        self._resumed_from: int | None = None
        self._reconnects = 0
        # the offset after the last one delivered (None: nothing delivered yet)
        self._next_offset: int | None = None
        self._spec = self._start.specification()
        self._reconnecting: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"rabbitmq:{self._stream}"

    @property
    def resumed_from(self) -> int | None:
        """The stored offset this source resumed after (``None``: it used ``start``)."""
        return self._resumed_from

    def _make_consumer(self) -> Consumer:
        c = self._connection
        # rstream does not recover consumers by default; _reconnect does
        return Consumer(
            c.host,
            c.port,
            username=c.username,
            password=c.password,
            vhost=c.vhost,
            on_close_handler=self._on_connection_closed,
        )

    async def _subscribe(self, consumer: Consumer) -> None:
        spec = self._spec
        if self._next_offset is not None:
            spec = ConsumerOffsetSpecification(OffsetType.OFFSET, self._next_offset)
        await consumer.subscribe(
            self._stream,
            self._on_message,
            decoder=amqp_decoder,
            offset_specification=spec,
            subscriber_name=self._consumer_name,
            initial_credit=self._initial_credit,
        )

    async def __aenter__(self) -> RabbitMQSource:
        consumer = self._make_consumer()
        self._consumer = consumer
        await consumer.start()
        if self._create:
            await consumer.create_stream(
                self._stream, arguments=self._retention.arguments(), exists_ok=True
            )
        if self._resume:
            try:
                self._stored = await consumer.query_offset(self._stream, self._consumer_name)
            except OffsetNotFound:
                self._stored = None
            if self._stored is not None:
                self._resumed_from = self._stored
                self._spec = ConsumerOffsetSpecification(OffsetType.OFFSET, self._stored + 1)
        await self._subscribe(consumer)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_connection_closed(self, info: object) -> None:
        if self._handout.closed or self._reconnecting is not None:
            return
        self._reconnects += 1
        self._reconnecting = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Subscribe again on a new connection, after the last offset delivered."""
        delay = 0.1
        while not self._handout.closed:
            old, self._consumer = self._consumer, None
            if old is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await old.close()
            consumer = self._make_consumer()
            try:
                await consumer.start()
                await self._subscribe(consumer)
            except Exception:
                self._consumer = consumer  # closed on the next round
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 5.0)
                continue
            self._consumer = consumer
            break
        self._reconnecting = None

    async def _on_message(self, message: AMQPMessage, context: MessageContext) -> None:
        # Waiting in put holds rstream's delivery task, which then grants the
        # broker no more credit: backpressure reaches the broker.
        offset = context.offset

        def fresh() -> bool:  # not delivered already, before a reconnect
            return self._next_offset is None or offset >= self._next_offset

        inbound = Inbound(message_record(message), self._stream, offset)
        if await self._handout.put(inbound, fresh):
            self._next_offset = offset + 1

    def __aiter__(self) -> AsyncIterator[Inbound]:
        return self._handout.records()

    async def ack(self, inbound: Inbound) -> None:
        """Commit ``inbound`` once every earlier record is acked too.

        :raises ValueError: ``inbound`` was not delivered by this source or is acked already.
        """
        committed = await self._handout.ack(inbound)
        if committed is not None:
            self._committed = committed
            if self._stored is None or committed - self._stored >= self._commit_every:
                await self._store()

    async def nack(self, inbound: Inbound, reason: str) -> None:
        """Yield ``inbound`` again before newer records; its offset stays uncommitted."""
        await self._handout.nack(inbound)

    async def _store(self) -> None:
        if self._consumer is None or self._committed is None or self._committed == self._stored:
            return
        try:
            await self._consumer.store_offset(self._stream, self._consumer_name, self._committed)
        except Exception:
            return  # the connection is being replaced: the next store carries it
        self._stored = self._committed

    async def close(self) -> None:
        """Store the acked prefix's offset and close the connection. Idempotent."""
        if not await self._handout.close():
            return
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        if self._consumer is not None:
            try:
                await self._store()
            finally:
                consumer, self._consumer = self._consumer, None
                # a consumer whose connection just dropped may fail to close
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(10):
                        await consumer.close()

    def statistics(self) -> ConnectorStatistics:
        return self._handout.statistics(self._reconnects)
