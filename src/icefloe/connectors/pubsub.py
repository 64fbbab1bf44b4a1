"""Google Cloud Pub/Sub: :class:`PubSubSink` publishes records, :class:`PubSubSource` pulls them.

Needs the ``pubsub`` extra (``pip install icefloe[pubsub]``: google-cloud-pubsub,
imported here only). docs/connectors-pubsub.md has the options and their defaults.

**Mapping.** A record's key becomes the message's ``ordering_key`` (so one
stream's chunks keep their order), its value the message ``data``, and its
headers the message ``attributes``: Pub/Sub attributes are a map of strings,
so a header name may appear once and its value must be UTF-8 (the sink
refuses others with ``ValueError``). Read back, attributes come in name
order; :func:`~icefloe.connectors.record.record_chunk` looks headers up by
name, so order does not matter to it.

**Sink.** One ``PublisherClient`` with message ordering on, batching
(``max_batch_messages``, ``max_batch_bytes``, ``max_latency_s``) and at most
``max_in_flight`` messages published and not yet confirmed: :meth:`send`
waits (on the event loop, never blocking it) while that many are
outstanding. A failed publish of an ordering key makes the client refuse
the key's later messages; :meth:`flush` reports all of them in
:class:`~icefloe.connectors.protocol.DeliveryFailed` and then resumes the
key (``resume_publish``), so the caller decides what to resend.

**Source.** A streaming pull (``SubscriberClient.subscribe``) whose flow
control lets at most ``max_in_flight`` messages be unacked at once; the
client library's callback thread hands each message to the event loop with
``call_soon_threadsafe`` into a queue of that same size, so the queue can
never overflow (a message that would is nacked). The client library extends
the ack deadline of every unacked message (up to ``max_lease_s``); :meth:`ack`
acks and :meth:`nack` nacks (immediate redelivery). ``Inbound.position`` is a
:class:`PubSubPosition` (message id and this delivery's ack id);
``Inbound.deliveries`` is the service's ``delivery_attempt``, which Pub/Sub
fills only for subscriptions with a dead-letter policy (1 otherwise).

**Endpoint.** ``endpoint=None`` talks to Google with application default
credentials. ``endpoint="host:port", insecure=True`` talks plaintext gRPC
with no credentials to an emulator or the test double (tests only).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Any

import google.cloud.pubsub_v1 as pubsub_v1
from google.cloud.pubsub_v1.publisher import exceptions as publisher_exceptions

from icefloe.connectors.protocol import ConnectorStatistics, Inbound
from icefloe.connectors.pubsub_position import PubSubPosition
from icefloe.connectors.record import Record
from icefloe.connectors.undelivered import Undelivered

__all__ = ["PubSubPosition", "PubSubSink", "PubSubSource"]

#: how long closing waits for the client library's threads (publish commits, stream shutdown)
_CLOSE_TIMEOUT_S = 30.0


def _positive(name: str, value: float, *, integer: bool = False) -> None:
    if isinstance(value, bool) or (integer and not isinstance(value, int)):
        raise ValueError(f"{name} must be {'an int' if integer else 'a number'} > 0, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _check_endpoint(endpoint: str | None, insecure: bool) -> None:
    if endpoint is None and insecure:
        raise ValueError("insecure=True needs an endpoint (an emulator's host:port)")
    if endpoint is not None and (not isinstance(endpoint, str) or not endpoint):
        raise ValueError(f"endpoint must be 'host:port', got {endpoint!r}")


def _transport_kwargs(kind: str, endpoint: str | None, insecure: bool) -> dict[str, Any]:
    """Client constructor arguments for ``endpoint`` (None: Google, default credentials)."""
    if endpoint is None:
        return {}
    if not insecure:
        return {"client_options": {"api_endpoint": endpoint}}
    import grpc
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    transport = PublisherGrpcTransport if kind == "publisher" else SubscriberGrpcTransport
    # An explicit plaintext channel: no credentials are looked up or sent.
    return {"transport": transport(channel=grpc.insecure_channel(endpoint))}


def _attributes(record: Record) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for name, value in record.headers:
        if name in attributes:
            raise ValueError(f"record header {name!r} repeats; Pub/Sub attributes are a map")
        try:
            attributes[name] = value.decode()
        except UnicodeDecodeError:
            raise ValueError(f"record header {name!r} is not UTF-8 text") from None
    return attributes


class PubSubSink:
    """Publishes records to ``topic`` (``projects/P/topics/T``); see the module docstring."""

    def __init__(
        self,
        topic: str,
        *,
        endpoint: str | None = None,
        insecure: bool = False,
        max_in_flight: int = 1000,
        max_batch_messages: int = 100,
        max_batch_bytes: int = 1_000_000,
        max_latency_s: float = 0.01,
    ) -> None:
        _positive("max_in_flight", max_in_flight, integer=True)
        _positive("max_batch_messages", max_batch_messages, integer=True)
        _positive("max_batch_bytes", max_batch_bytes, integer=True)
        _positive("max_latency_s", max_latency_s)
        self._topic = topic
        _check_endpoint(endpoint, insecure)
        self._endpoint = (endpoint, insecure)
        self._max_in_flight = max_in_flight
        self._batch = pubsub_v1.types.BatchSettings(
            max_messages=max_batch_messages, max_bytes=max_batch_bytes, max_latency=max_latency_s
        )
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(max_in_flight)
        self._idle = asyncio.Event()
        self._idle.set()
        self._pending = 0
        self._failures = Undelivered()
        self._paused: set[str] = set()
        self._sent = self._confirmed = self._failed = 0
        self._closed = False

    @property
    def name(self) -> str:
        return f"pubsub:{self._topic}"

    async def __aenter__(self) -> PubSubSink:
        self._loop = asyncio.get_running_loop()
        options = pubsub_v1.types.PublisherOptions(
            enable_message_ordering=True,
            # A guard only: send() already keeps at most max_in_flight outstanding.
            flow_control=pubsub_v1.types.PublishFlowControl(
                message_limit=self._max_in_flight,
                limit_exceeded_behavior=pubsub_v1.types.LimitExceededBehavior.ERROR,
            ),
        )
        self._client = pubsub_v1.PublisherClient(
            batch_settings=self._batch,
            publisher_options=options,
            **_transport_kwargs("publisher", *self._endpoint),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, record: Record) -> None:
        """Publish ``record``; waits while ``max_in_flight`` are unconfirmed.

        :raises ValueError: a header repeats or is not UTF-8, or the key is not UTF-8.
        :raises RuntimeError: the sink is not open.
        """
        if self._client is None or self._closed:
            raise RuntimeError("the sink is not open (use `async with PubSubSink(...)`)")
        attributes = _attributes(record)
        try:
            key = "" if record.key is None else record.key.decode()
        except UnicodeDecodeError:
            raise ValueError("record key is not UTF-8 text (Pub/Sub ordering keys are)") from None
        await self._slots.acquire()
        self._sent += 1
        self._pending += 1
        self._idle.clear()
        try:
            future = self._client.publish(self._topic, record.value, ordering_key=key, **attributes)
        except publisher_exceptions.PublishToPausedOrderingKeyException:
            self._settle(record, key, "an earlier message of this ordering key failed")
            return
        except Exception as exc:
            self._settle(record, key, f"{type(exc).__name__}: {exc}")
            raise
        future.add_done_callback(lambda f: self._from_thread(record, key, f))

    def _from_thread(self, record: Record, key: str, future: Future[str]) -> None:
        # Runs on the client library's thread: only hand over to the loop.
        exc = future.exception()
        reason = None if exc is None else f"{type(exc).__name__}: {exc}"
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._settle, record, key, reason)

    def _settle(self, record: Record, key: str, reason: str | None) -> None:
        if reason is None:
            self._confirmed += 1
        else:
            self._failed += 1
            self._failures.add(record, reason)
            if key:
                self._paused.add(key)
        self._pending -= 1
        self._slots.release()
        if self._pending == 0:
            self._idle.set()

    async def flush(self) -> None:
        """Wait until every record sent so far is confirmed or failed.

        :raises DeliveryFailed: the failed ones (their ordering keys resumed).
        """
        await self._idle.wait()
        if not self._failures:
            return
        for key in self._paused:
            self._client.resume_publish(self._topic, key)
        self._paused.clear()
        self._failures.report()

    async def close(self) -> None:
        """Flush, then stop the client (its threads and channel). Idempotent."""
        if self._closed or self._client is None:
            self._closed = True
            return
        try:
            await self.flush()
        finally:
            self._closed = True
            client, self._client = self._client, None
            await asyncio.wait_for(asyncio.to_thread(client.stop), _CLOSE_TIMEOUT_S)
            client.transport.close()

    def statistics(self) -> ConnectorStatistics:
        return ConnectorStatistics(self._sent, self._confirmed, self._failed, self._pending, 0)


class PubSubSource:
    """Pulls from ``subscription`` (``projects/P/subscriptions/S``); see the module docstring."""

    def __init__(
        self,
        subscription: str,
        *,
        endpoint: str | None = None,
        insecure: bool = False,
        max_in_flight: int = 1000,
        max_lease_s: float = 3600.0,
    ) -> None:
        _positive("max_in_flight", max_in_flight, integer=True)
        _positive("max_lease_s", max_lease_s)
        self._subscription = subscription
        _check_endpoint(endpoint, insecure)
        self._endpoint = (endpoint, insecure)
        self._flow = pubsub_v1.types.FlowControl(
            max_messages=max_in_flight, max_lease_duration=max_lease_s
        )
        self._queue: asyncio.Queue[Inbound] = asyncio.Queue(max_in_flight)
        self._held: dict[str, Any] = {}
        self._client: Any = None
        self._future: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: asyncio.Future[BaseException] | None = None
        self._received = self._acked = self._nacked = 0

    @property
    def name(self) -> str:
        return f"pubsub:{self._subscription}"

    async def __aenter__(self) -> PubSubSource:
        self._loop = asyncio.get_running_loop()
        self._failure = self._loop.create_future()
        self._client = pubsub_v1.SubscriberClient(
            **_transport_kwargs("subscriber", *self._endpoint)
        )
        self._future = self._client.subscribe(
            self._subscription, callback=self._from_thread, flow_control=self._flow
        )
        self._future.add_done_callback(self._stream_ended)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _from_thread(self, message: Any) -> None:
        # The client library's callback thread: convert, then hand over to the loop.
        attributes = dict(message.attributes)
        record = Record(
            message.ordering_key.encode() if message.ordering_key else None,
            bytes(message.data),
            tuple((name, attributes[name].encode()) for name in sorted(attributes)),
        )
        position = PubSubPosition(message.message_id, message.ack_id)
        inbound = Inbound(record, self._subscription, position, message.delivery_attempt or 1)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._arrived, inbound, message)

    def _arrived(self, inbound: Inbound, message: Any) -> None:
        if self._client is None:
            message.nack()  # arrived while closing: nobody will read it
            return
        try:
            self._queue.put_nowait(inbound)
        except asyncio.QueueFull:
            # Flow control allows at most max_in_flight unacked, the queue's size.
            message.nack()
            return
        self._received += 1
        self._held[inbound.position.ack_id] = message

    def _stream_ended(self, future: Any) -> None:
        exc = None if future.cancelled() else future.exception()
        if exc is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._fail, exc)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is not None and not self._failure.done():
            self._failure.set_result(exc)

    def __aiter__(self) -> AsyncIterator[Inbound]:
        return self

    async def __anext__(self) -> Inbound:
        if self._failure is None:
            raise RuntimeError("the source is not open (use `async with PubSubSource(...)`)")
        if not self._queue.empty():
            return self._queue.get_nowait()
        if self._failure.done():
            raise ConnectionError(f"{self.name}: streaming pull ended: {self._failure.result()}")
        getter = asyncio.ensure_future(self._queue.get())
        try:
            await asyncio.wait((getter, self._failure), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        raise ConnectionError(f"{self.name}: streaming pull ended: {self._failure.result()}")

    def _take(self, inbound: Inbound) -> Any:
        position = inbound.position
        if not isinstance(position, PubSubPosition):
            raise ValueError("inbound.position is not a PubSubPosition from this source")
        message = self._held.pop(position.ack_id, None)
        if message is None:
            raise ValueError(f"message {position.message_id} was already acked or nacked")
        return message

    async def ack(self, inbound: Inbound) -> None:
        """Ack the message (the client library sends it; no redelivery after it lands)."""
        self._take(inbound).ack()
        self._acked += 1

    async def nack(self, inbound: Inbound, reason: str) -> None:
        """Nack the message: Pub/Sub redelivers it (``reason`` stays local: no field for it)."""
        self._take(inbound).nack()
        self._nacked += 1

    async def close(self) -> None:
        """Nack what the consumer still holds, stop the stream, close the client. Idempotent."""
        client, self._client = self._client, None
        if client is None:
            return
        for message in self._held.values():
            message.nack()
        self._held.clear()
        future = self._future

        def stop() -> None:
            future.cancel()
            try:
                future.result(_CLOSE_TIMEOUT_S)
            except BaseException:
                pass
            client.close()

        await asyncio.to_thread(stop)

    def statistics(self) -> ConnectorStatistics:
        in_flight = len(self._held)
        return ConnectorStatistics(self._received, self._acked, self._nacked, in_flight, 0)
