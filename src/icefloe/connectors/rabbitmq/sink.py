"""The RabbitMQ Streams sink: batched publishes with publisher confirms."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Final

from rstream import ConfirmationStatus, Producer
from rstream.recovery import BackOffRecoveryStrategy

from icefloe.connectors.protocol import ConnectorStatistics
from icefloe.connectors.rabbitmq.amqp import encode_message
from icefloe.connectors.rabbitmq.options import (
    DEFAULT_RETENTION,
    DEFAULT_STREAM_PORT,
    Connection,
    StreamRetention,
    positive,
)
from icefloe.connectors.record import Record
from icefloe.connectors.undelivered import Undelivered
from icefloe.exceptions import InvalidState

__all__ = ["RabbitMQSink"]

#: response code rstream reports when a connection dropped before the confirm
_CONNECTION_LOST: Final = -1


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
            positive(name, value)
        self._stream = stream
        self._connection = Connection(host, port, username, password, vhost)
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
        producer = Producer(
            **self._connection.client_options(),
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
