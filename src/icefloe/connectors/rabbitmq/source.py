"""The RabbitMQ Streams source: a named consumer with offsets stored on the broker."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

from rstream import (
    AMQPMessage,
    Consumer,
    ConsumerOffsetSpecification,
    MessageContext,
    OffsetNotFound,
    OffsetType,
    amqp_decoder,
)

from icefloe.connectors.handout import Handout
from icefloe.connectors.protocol import ConnectorStatistics, Inbound
from icefloe.connectors.rabbitmq.amqp import message_record
from icefloe.connectors.rabbitmq.options import (
    DEFAULT_RETENTION,
    DEFAULT_STREAM_PORT,
    FROM_FIRST,
    Connection,
    StartAt,
    StreamRetention,
    positive,
)

__all__ = ["RabbitMQSource"]


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
            positive(name, value)
        start.specification()  # validate now
        self._stream = stream
        self._consumer_name = consumer_name
        self._start = start
        self._resume = resume
        self._connection = Connection(host, port, username, password, vhost)
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
        # rstream does not recover consumers by default; _reconnect does
        return Consumer(
            **self._connection.client_options(),
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
