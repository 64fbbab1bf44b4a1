"""A TEST DOUBLE of Google Cloud Pub/Sub: the public gRPC API, in memory, for tests only.

No Pub/Sub emulator can run here (Google's needs gcloud), so the connector's
tests talk to this server over a real socket instead. It is NOT Pub/Sub and
not part of the package: it implements only the calls
:mod:`icefloe.connectors.pubsub` and the tests make, with the message types
google-cloud-pubsub ships (``google.pubsub_v1.types``, proto-plus, whose
``serialize``/``deserialize`` feed grpc's generic method handlers):

* Publisher: ``CreateTopic``, ``GetTopic``, ``Publish``;
* Subscriber: ``CreateSubscription``, ``GetSubscription``, ``StreamingPull``,
  ``Acknowledge``, ``ModifyAckDeadline``.

What it does as the service does: a message published to a topic goes to
every subscription that existed then; a delivered message is outstanding
until acked, and comes back (``delivery_attempt`` + 1) when nacked
(``ModifyAckDeadline`` to 0), when its ack deadline passes, or when its
stream closes; a streaming pull gets at most the ``max_outstanding_messages``
its first request asks for; with message ordering on, the messages of one
ordering key are delivered in publish order, and a key's next batch only
once none of the key's messages is outstanding (a redelivered message takes
the key's later outstanding messages back with it).

What it simplifies: ``delivery_attempt`` is filled when the subscription has
a dead-letter policy, but nothing is ever moved to a dead-letter topic; no
byte limits, no exactly-once, no filters, no retention, no IAM.
``max_ack_deadline_s`` caps every deadline (tests of expiry use 1 s; the
service's minimum is 10 s).

Run in a thread with its own event loop (``grpc.aio``), so a test's own loop
and the client library's threads never wait on each other.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.pubsub_v1 import types as pt

__all__ = ["PubSubTestDouble"]

#: the most messages one StreamingPullResponse carries
_MAX_BATCH = 500
#: how often outstanding messages are checked for an expired deadline
_EXPIRY_TICK_S = 0.05


@dataclass(order=True)
class _Message:
    seq: int
    #: the ordering key ("" when none, or when the subscription is not ordered)
    key: str = field(compare=False)
    message: pt.PubsubMessage = field(compare=False)
    attempts: int = field(default=0, compare=False)


@dataclass
class _Lease:
    message: _Message
    deadline: float
    stream: int


@dataclass
class _Subscription:
    spec: pt.Subscription
    #: messages waiting for delivery, per ordering key, in publish order
    ready: dict[str, deque[_Message]] = field(default_factory=dict)
    leases: dict[str, _Lease] = field(default_factory=dict)
    #: outstanding messages per ordering key
    busy: Counter[str] = field(default_factory=Counter)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ordered(self) -> bool:
        return bool(self.spec.enable_message_ordering)

    def wake(self) -> None:
        self.changed.set()


class _State:
    """Topics and subscriptions; touched only on the server's event loop."""

    def __init__(self, max_ack_deadline_s: float) -> None:
        self.max_deadline = max_ack_deadline_s
        self.topics: dict[str, pt.Topic] = {}
        self.subscriptions: dict[str, _Subscription] = {}
        self.seq = itertools.count(1)
        self.ack_ids = itertools.count(1)
        self.streams = itertools.count(1)
        self.published = 0
        self.redelivered = 0
        #: ModifyAckDeadline extensions (seconds > 0) of outstanding messages
        self.extensions = 0

    def deadline_s(self, requested: float) -> float:
        return min(float(requested) if requested > 0 else 10.0, self.max_deadline)

    def publish(self, topic: str, messages: list[pt.PubsubMessage]) -> list[str]:
        ids = []
        now = time.time()
        for message in messages:
            seq = next(self.seq)
            stamped = pt.PubsubMessage(message)
            stamped.message_id = str(seq)
            stamped.publish_time = timestamp_pb2.Timestamp(
                seconds=int(now), nanos=int(now % 1 * 1e9)
            )
            ids.append(stamped.message_id)
            for sub in self.subscriptions.values():
                if sub.spec.topic == topic:
                    key = message.ordering_key if sub.ordered else ""
                    sub.ready.setdefault(key, deque()).append(_Message(seq, key, stamped))
        self.published += len(messages)
        for sub in self.subscriptions.values():
            if sub.spec.topic == topic:
                sub.wake()
        return ids

    def take(self, sub: _Subscription, room: int, stream: int, deadline_s: float) -> list[Any]:
        """Lease up to ``room`` ready messages; a key with outstanding messages waits."""
        taken: list[pt.ReceivedMessage] = []
        expires = time.monotonic() + deadline_s
        limit = min(room, _MAX_BATCH)
        for key, queue in list(sub.ready.items()):
            if key and sub.busy[key]:
                continue
            while queue and len(taken) < limit:
                item = queue.popleft()
                item.attempts += 1
                ack_id = f"{next(self.ack_ids)}"
                sub.leases[ack_id] = _Lease(item, expires, stream)
                if key:
                    sub.busy[key] += 1
                received = pt.ReceivedMessage(ack_id=ack_id, message=item.message)
                if sub.spec.dead_letter_policy.max_delivery_attempts:
                    received.delivery_attempt = item.attempts
                taken.append(received)
            if not queue:
                del sub.ready[key]
            if len(taken) >= limit:
                break
        return taken

    def settle(self, sub: _Subscription, ack_id: str, *, redeliver: bool) -> None:
        lease = sub.leases.pop(ack_id, None)
        if lease is None:
            return  # an old ack id: acked already, or taken back
        key = lease.message.key
        if key:
            sub.busy[key] -= 1
        if not redeliver:
            return
        back = [lease.message]
        if key:
            # The service redelivers the key's other outstanding messages with it, in order.
            for other_id, other in list(sub.leases.items()):
                if other.message.key == key:
                    del sub.leases[other_id]
                    sub.busy[key] -= 1
                    back.append(other.message)
        queue = sub.ready.setdefault(key, deque())
        for item in back:
            bisect.insort(queue, item)
        self.redelivered += len(back)
        sub.wake()

    def expire(self) -> None:
        now = time.monotonic()
        for sub in self.subscriptions.values():
            for ack_id in [a for a, lease in sub.leases.items() if lease.deadline <= now]:
                self.settle(sub, ack_id, redeliver=True)

    def extend(self, sub: _Subscription, ack_ids: Any, seconds: int) -> None:
        if seconds == 0:
            for ack_id in ack_ids:
                self.settle(sub, ack_id, redeliver=True)
            return
        expires = time.monotonic() + self.deadline_s(seconds)
        for ack_id in ack_ids:
            lease = sub.leases.get(ack_id)
            if lease is not None:
                lease.deadline = expires
                self.extensions += 1


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class PubSubTestDouble:
    """The Pub/Sub TEST DOUBLE on 127.0.0.1:<free port>, in a thread; ``endpoint`` is ``host:port``.

    Use as a context manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(self, *, max_ack_deadline_s: float = 600.0) -> None:
        self.state = _State(max_ack_deadline_s)
        self.endpoint = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None
        self._expiry: asyncio.Task[None] | None = None

    def __enter__(self) -> PubSubTestDouble:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def call(self, fn: Callable[[_State], Any]) -> Any:
        """Run ``fn(state)`` on the server's loop (e.g. to read a counter)."""

        async def run() -> Any:
            return fn(self.state)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    async def _start(self) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(self._handlers())
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        self.endpoint = f"127.0.0.1:{port}"
        self._expiry = asyncio.create_task(self._expire_forever())

    async def _stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._server is not None:
            await self._server.stop(grace=0.5)

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(_EXPIRY_TICK_S)
            self.state.expire()

    def _handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        def unary(fn: Handler, request: Any, response: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request.deserialize, response_serializer=response.serialize
            )

        publisher = {
            "CreateTopic": unary(self._create_topic, pt.Topic, pt.Topic),
            "GetTopic": unary(self._get_topic, pt.GetTopicRequest, pt.Topic),
            "Publish": unary(self._publish, pt.PublishRequest, pt.PublishResponse),
        }
        subscriber = {
            "CreateSubscription": unary(
                self._create_subscription, pt.Subscription, pt.Subscription
            ),
            "GetSubscription": unary(
                self._get_subscription, pt.GetSubscriptionRequest, pt.Subscription
            ),
            "Acknowledge": unary(self._acknowledge, pt.AcknowledgeRequest, _Empty),
            "ModifyAckDeadline": unary(self._modify, pt.ModifyAckDeadlineRequest, _Empty),
            "StreamingPull": grpc.stream_stream_rpc_method_handler(
                self._streaming_pull,
                request_deserializer=pt.StreamingPullRequest.deserialize,
                response_serializer=pt.StreamingPullResponse.serialize,
            ),
        }
        return (
            grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", publisher),
            grpc.method_handlers_generic_handler("google.pubsub.v1.Subscriber", subscriber),
        )

    # -- Publisher -------------------------------------------------------------

    async def _create_topic(self, topic: pt.Topic, context: grpc.aio.ServicerContext) -> pt.Topic:
        if topic.name in self.state.topics:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"topic {topic.name} exists")
        self.state.topics[topic.name] = topic
        return topic

    async def _get_topic(
        self, request: pt.GetTopicRequest, context: grpc.aio.ServicerContext
    ) -> pt.Topic:
        topic = self.state.topics.get(request.topic)
        if topic is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no topic {request.topic}")
        return topic

    async def _publish(
        self, request: pt.PublishRequest, context: grpc.aio.ServicerContext
    ) -> pt.PublishResponse:
        if request.topic not in self.state.topics:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no topic {request.topic}")
        ids = self.state.publish(request.topic, list(request.messages))
        return pt.PublishResponse(message_ids=ids)

    # -- Subscriber ------------------------------------------------------------

    async def _create_subscription(
        self, spec: pt.Subscription, context: grpc.aio.ServicerContext
    ) -> pt.Subscription:
        if spec.name in self.state.subscriptions:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"subscription {spec.name} exists")
        if spec.topic not in self.state.topics:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no topic {spec.topic}")
        if not spec.ack_deadline_seconds:
            spec.ack_deadline_seconds = 10
        self.state.subscriptions[spec.name] = _Subscription(spec)
        return spec

    async def _subscription(self, name: str, context: grpc.aio.ServicerContext) -> _Subscription:
        sub = self.state.subscriptions.get(name)
        if sub is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no subscription {name}")
        assert sub is not None
        return sub

    async def _get_subscription(
        self, request: pt.GetSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pt.Subscription:
        return (await self._subscription(request.subscription, context)).spec

    async def _acknowledge(
        self, request: pt.AcknowledgeRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        sub = await self._subscription(request.subscription, context)
        for ack_id in request.ack_ids:
            self.state.settle(sub, ack_id, redeliver=False)
        sub.wake()
        return _Empty()

    async def _modify(
        self, request: pt.ModifyAckDeadlineRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        sub = await self._subscription(request.subscription, context)
        self.state.extend(sub, request.ack_ids, request.ack_deadline_seconds)
        return _Empty()

    async def _streaming_pull(
        self, requests: AsyncIterator[pt.StreamingPullRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pt.StreamingPullResponse]:
        first = await anext(aiter(requests))
        sub = await self._subscription(first.subscription, context)
        stream = next(self.state.streams)
        limit = first.max_outstanding_messages or 1000
        deadline = [self.state.deadline_s(first.stream_ack_deadline_seconds)]
        reader = asyncio.create_task(self._read_stream(sub, requests, deadline))
        properties = pt.StreamingPullResponse.SubscriptionProperties(
            message_ordering_enabled=sub.ordered
        )
        try:
            while not reader.done():
                sub.changed.clear()
                mine = sum(1 for lease in sub.leases.values() if lease.stream == stream)
                batch = self.state.take(sub, limit - mine, stream, deadline[0])
                if batch:
                    yield pt.StreamingPullResponse(
                        received_messages=batch, subscription_properties=properties
                    )
                    continue
                waiter = asyncio.create_task(sub.changed.wait())
                try:
                    await asyncio.wait((waiter, reader), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
        finally:
            reader.cancel()
            for ack_id in [a for a, lease in sub.leases.items() if lease.stream == stream]:
                self.state.settle(sub, ack_id, redeliver=True)

    async def _read_stream(
        self,
        sub: _Subscription,
        requests: AsyncIterator[pt.StreamingPullRequest],
        deadline: list[float],
    ) -> None:
        async for request in requests:
            for ack_id in request.ack_ids:
                self.state.settle(sub, ack_id, redeliver=False)
            for ack_id, seconds in zip(
                request.modify_deadline_ack_ids, request.modify_deadline_seconds, strict=False
            ):
                self.state.extend(sub, [ack_id], seconds)
            if request.stream_ack_deadline_seconds:
                deadline[0] = self.state.deadline_s(request.stream_ack_deadline_seconds)
            sub.wake()


class _Empty:
    """``google.protobuf.Empty`` on the wire: no bytes."""

    @staticmethod
    def serialize(_message: Any) -> bytes:
        return b""
