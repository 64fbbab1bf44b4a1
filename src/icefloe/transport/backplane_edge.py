"""The edge's side of the backplane: streams of other gateways, read here.

:class:`EdgeBackplane` ties one app's flow to a backplane
:class:`~icefloe.backplane.protocol.Engine` (Redis or NATS JetStream, by the
URL's scheme, :func:`~icefloe.backplane.engines.engine_for`):

* every run this gateway starts is published (a blocking in-process reader
  attached at seq 0 feeds the engine, so the producer can run at most the
  backplane window ahead of the slowest remote reader);
* hub events published here (HTTP, WebSocket) are numbered on the engine
  (one offset sequence and epoch per topic across all gateways) and every
  gateway, this one too, publishes them into its hub from there
  (:mod:`icefloe.backplane.topics`); it is the edge's
  :class:`~icefloe.transport.topic_log.TopicLog`;
* a stream the flow does not know (``flow.brief`` and ``flow.finished`` are
  None) is looked up in the engine; the stream routes then read it through a
  :class:`~icefloe.backplane.reader.RemoteReader`, answer its status, list it
  and cancel it through the engine's control log.

A stream read on the gateway that produces it never reaches this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from icefloe.backplane.engine import RedisBackplane
from icefloe.backplane.engines import engine_for
from icefloe.backplane.idempotency import IdempotencyClaims
from icefloe.backplane.meta import LIVE, QUEUED, StreamMeta
from icefloe.backplane.protocol import NumberedTopicLink, TopicLink
from icefloe.backplane.publisher import TTL_S
from icefloe.backplane.reader import RemoteReader
from icefloe.backplane.runqueue import RunQueue
from icefloe.backplane.sessions import RedisSessionKeeper
from icefloe.core.messages import Message
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import ClosedResourceError, EndOfStream, StreamError
from icefloe.hub import Hub, HubEvent
from icefloe.runtime.flow import Flow
from icefloe.transport.auth import Principal
from icefloe.transport.encoding import parse_resume_point
from icefloe.transport.errors import HttpError

__all__ = ["DELIVER_TIMEOUT_S", "EdgeBackplane"]

#: seconds an event from another gateway may wait for room in this hub
#: (then it is dropped here, and logged)
DELIVER_TIMEOUT_S = 1.0

_encode_event = msgspec.msgpack.encode
_decode_event = msgspec.msgpack.Decoder(tuple[Any, dict[str, Any]]).decode
_decode_forwarded = msgspec.msgpack.Decoder(tuple[str, str, Any, dict[str, Any], str]).decode


class EdgeBackplane:
    """One app's streams shared with the other gateways on the engine."""

    def __init__(
        self,
        flow: Flow,
        hub: Hub,
        url: str,
        *,
        history: int,
        window: int,
        no_runs: bool = False,
        idempotency_ttl_s: float = 600.0,
    ) -> None:
        self._flow = flow
        self._hub = hub
        self.engine = engine = engine_for(
            url, history=history, window=window, on_cancel=flow.cancel
        )
        if no_runs and not isinstance(engine, RedisBackplane):
            raise ValueError("--no-runs needs a redis:// backplane: workers queue on Redis Streams")
        # The engine numbers topics (Redis), or each hub does and events are
        # forwarded (NATS: core NATS keeps no log to number them from).
        self._link: NumberedTopicLink | None = None
        self._forward: TopicLink | None = None
        #: the run queue starts go to (``--no-runs``: workers run them; None: this gateway does)
        self.queue: RunQueue | None = None
        self._no_runs = no_runs
        self._sessions: RedisSessionKeeper | None = None
        #: the Redis engine, for what only it shares (sessions, idempotency keys,
        #: tenant caps, chats, the run queue); None on NATS, where those stay
        #: per gateway (docs/deploy.md)
        self.redis = engine if isinstance(engine, RedisBackplane) else None
        #: idempotency keys claimed across gateways (None: per gateway)
        redis = self.redis
        self.claims = (
            None
            if redis is None
            else IdempotencyClaims(lambda: redis.client, redis.keys, idempotency_ttl_s)
        )

    async def open(self) -> None:
        engine = self.engine
        await engine.open()
        if self._no_runs and self.redis is not None:
            self.queue = RunQueue(self.redis.client, self.redis.keys)
            await self.queue.ensure_group()
        link = engine.topic_link(self._deliver, self._deliver_forwarded)
        if isinstance(link, NumberedTopicLink):
            self._link = link
        else:
            self._forward = link
        await link.open()
        if self.redis is not None:
            keys = self.redis.keys
            self._sessions = RedisSessionKeeper(
                self.redis.client, keys.prefix, keys.control, self.redis.process_id
            )

    # -- WebSocket sessions: the edge's SessionKeeper (see icefloe.backplane.sessions) --

    def _keeper(self) -> RedisSessionKeeper:
        if self._sessions is None:
            raise RuntimeError("the backplane is not open")
        return self._sessions

    async def take(self, session_id: str, owner: str) -> bytes | None:
        return await self._keeper().take(session_id, owner)

    async def put(
        self, session_id: str, blob: bytes, owner: str, attached: bool, ttl_s: float
    ) -> None:
        await self._keeper().put(session_id, blob, owner, attached, ttl_s)

    async def delete(self, session_id: str) -> None:
        await self._keeper().delete(session_id)

    async def hold(self, session_id: str) -> bool:
        return await self._keeper().hold(session_id)

    def on_session_taken(self, callback: Callable[[str], object]) -> None:
        """Call ``callback(session_id)`` when another gateway resumes a session."""
        if self.redis is not None:
            self.redis.on_session_taken = callback

    async def aclose(self) -> None:
        for link in (self._link, self._forward):
            if link is not None:
                await link.aclose()
        await self.engine.aclose()

    # -- hub topics numbered by the engine (a TopicLog: transport/topic_log.py) --
    def _encoded(
        self, topic: str, data: Any, tenant: str, headers: Mapping[str, Any] | None
    ) -> bytes:
        if self._link is None:
            raise ClosedResourceError("the backplane is not open")
        # Checked here as the hub would check it, so the engine numbers only valid events.
        self._hub.position(topic, data, tenant=tenant, headers=headers)
        return _encode_event((data, dict(headers or {})))

    async def publish(
        self, topic: str, data: Any, *, tenant: str, headers: Mapping[str, Any] | None = None
    ) -> tuple[str, int]:
        """Number the event on the engine; every gateway (this one too) delivers it."""
        if self._forward is not None:
            return await self._publish_here(topic, data, tenant, headers)
        raw = self._encoded(topic, data, tenant, headers)
        assert self._link is not None
        return await self._link.publish(tenant, topic, raw)

    def submit(
        self, topic: str, data: Any, *, tenant: str, headers: Mapping[str, Any] | None = None
    ) -> asyncio.Future[tuple[str, int]]:
        if self._forward is not None:
            return asyncio.ensure_future(self._publish_here(topic, data, tenant, headers))
        raw = self._encoded(topic, data, tenant, headers)
        assert self._link is not None
        return self._link.submit(tenant, topic, raw)

    def publish_nowait(
        self, topic: str, data: Any, *, tenant: str, headers: Mapping[str, Any] | None = None
    ) -> None:
        if self._forward is not None:
            event = self._hub.publish_nowait(topic, data, tenant=tenant, headers=headers)
            self._share(event)
            return
        raw = self._encoded(topic, data, tenant, headers)
        assert self._link is not None
        self._link.publish_nowait(tenant, topic, raw)

    async def _deliver(self, tenant: str, topic: str, epoch: str, offset: int, raw: bytes) -> None:
        data, headers = _decode_event(raw)
        async with asyncio.timeout(DELIVER_TIMEOUT_S):
            await self._hub.publish_at(
                topic, data, tenant=tenant, offset=offset, epoch=epoch, headers=headers or None
            )

    # An engine that cannot number topics (NATS): each hub numbers its own
    # events, which are forwarded to the other gateways' hubs.
    async def _publish_here(
        self, topic: str, data: Any, tenant: str, headers: Mapping[str, Any] | None
    ) -> tuple[str, int]:
        event = await self._hub.publish(topic, data, tenant=tenant, headers=headers)
        self._share(event)
        return event.epoch, event.offset

    def _share(self, event: HubEvent) -> None:
        if self._forward is not None:
            fields = (event.topic, event.tenant, event.data, event.headers, event.reliability)
            self._forward.forward(_encode_event(fields))

    async def _deliver_forwarded(self, raw: bytes) -> None:
        topic, tenant, data, headers, reliability = _decode_forwarded(raw)
        async with asyncio.timeout(DELIVER_TIMEOUT_S):
            await self._hub.publish(
                topic, data, tenant=tenant, headers=headers, reliability=reliability
            )

    # -- end of hub topics --

    def started(self, stream_id: str, tenant: str) -> None:
        """Publish a run this gateway just started (before any chunk is trimmed)."""
        if self._no_runs:
            return  # a queued start: its worker publishes it
        self.engine.publish(stream_id, tenant, self._flow.subscribe(stream_id, 0))

    async def enqueue(self, message: Message) -> None:
        """Queue a start for the workers (``--no-runs``, issue 12).

        :raises StreamError: ``overloaded`` (the queue is full) or
            ``unavailable`` (the engine did not answer).
        """
        from redis.exceptions import RedisError

        from icefloe.store.records import encode_message

        sid = message.trace_id
        if self.queue is None:
            raise StreamError(ErrorCode.UNAVAILABLE, "the run queue is not open", sid)
        try:
            await self.queue.enqueue(sid, message.headers.tenant, encode_message(message))
        except RedisError:
            raise StreamError(ErrorCode.UNAVAILABLE, "the backplane is unreachable", sid) from None

    async def admit(self, tenant: str, stream_id: str) -> str | None:
        """Count a run about to start against its tenant's cap across gateways
        (``Limits.max_streams_per_tenant``); the refusal, if over it."""
        cap = self._flow.limits.max_streams_per_tenant
        if cap is None or not self.engine.healthy:
            return None  # unreachable: the flow's own (per-gateway) cap alone holds
        if self.redis is None:
            return None  # NATS: the flow's own (per-gateway) cap alone holds
        if await self.redis.tenant_runs.admit(tenant, stream_id, cap):
            return None
        return f"tenant {tenant!r} has reached its stream limit ({cap}); retry later"

    def refused(self, tenant: str, stream_id: str) -> None:
        """A run :meth:`admit` counted did not start."""
        if self.redis is not None:
            self.redis.finished(tenant, stream_id)

    def readers_elsewhere(self, stream_id: str) -> int:
        """How to correct a run's local reader count for the unread timeout:
        the backplane's own reader is no reader (-1), a reader on another
        gateway is one (+1)."""
        engine = self.engine
        if not engine.publishing(stream_id):
            return 0
        return (1 if engine.read_elsewhere(stream_id) else 0) - 1

    def _local(self, stream_id: str) -> bool:
        flow = self._flow
        return flow.brief(stream_id) is not None or flow.finished(stream_id) is not None

    async def _meta(self, principal: Principal, stream_id: str) -> StreamMeta | None:
        """The remote stream's meta if the principal may see it (None: not remote)."""
        if self._local(stream_id):
            return None
        meta = await self.engine.meta(stream_id)
        if meta is None or not principal.can_access_tenant(meta.tenant):
            return None
        return meta

    async def reader(
        self, request: Request, principal: Principal
    ) -> RemoteReader | Response | None:
        """A reader of a stream another gateway produces, at the request's resume
        point, or the response that replaces it; None: not a remote stream."""
        sid = request.path_params["stream_id"]
        try:
            from_seq = parse_resume_point(
                request.query_params.get("from_seq"), request.headers.get("last-event-id")
            )
        except ValueError as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, str(exc)) from None
        try:
            return await self.follow_stream(principal, sid, from_seq)
        except EndOfStream:
            return Response(status_code=204)  # the terminal was delivered: stop reconnecting
        except ValueError as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, str(exc)) from None
        except StreamError as exc:
            raise HttpError(exc.code, exc.message) from None

    async def follow_stream(
        self, principal: Principal, stream_id: str, from_seq: int | None
    ) -> RemoteReader | None:
        """A reader of a stream another gateway produces, from ``from_seq`` (None:
        the live head), for any edge (SSE, ``/v1/events``, WebSocket, chat).

        None: not a remote stream the principal may see (another tenant's
        reads as missing, as locally).

        :raises EndOfStream: the stream is done and ``from_seq`` is past its end
            (everything was delivered).
        :raises ValueError: ``from_seq`` is past the stream's next seq.
        :raises StreamError: ``history_gone`` or ``unavailable``.
        """
        meta = await self._meta(principal, stream_id)
        if meta is None:
            return None
        running = meta.state in LIVE
        if from_seq is None:
            from_seq = meta.last_seq + 1 if running else max(meta.last_seq, 0)
        if not running and meta.code is None and from_seq > meta.last_seq:
            raise EndOfStream(f"stream {stream_id!r} is done")
        if running and from_seq > meta.last_seq + 1 + self.engine.history:
            raise ValueError("from_seq is past the stream's next seq")
        return await self.engine.follow(meta, from_seq)

    async def poll_reader(
        self, principal: Principal, stream_id: str, from_seq: int
    ) -> RemoteReader | None:
        """A reader for one long-poll of a remote stream (None: not a remote stream)."""
        meta = await self._meta(principal, stream_id)
        if meta is None:
            return None
        try:
            return await self.engine.follow(meta, from_seq)
        except StreamError as exc:
            raise HttpError(exc.code, exc.message) from None

    async def status(self, principal: Principal, stream_id: str) -> dict[str, Any] | None:
        """The status of a remote stream (None: not a remote stream)."""
        meta = await self._meta(principal, stream_id)
        return None if meta is None else meta.to_json(self._subscribers(stream_id))

    async def streams(self, principal: Principal) -> list[dict[str, Any]]:
        """The remote streams the principal may see (this gateway's left out)."""
        return [
            meta.to_json(self._subscribers(meta.stream_id))
            for meta in await self.engine.list_streams()
            if principal.can_access_tenant(meta.tenant) and not self._local(meta.stream_id)
        ]

    async def cancel(self, principal: Principal, stream_id: str) -> dict[str, Any] | None:
        """Ask the producing gateway to cancel a remote stream; its status (None: not remote)."""
        meta = await self._meta(principal, stream_id)
        if meta is None:
            return None
        if meta.state in LIVE:
            await self.engine.cancel(stream_id)
        if meta.state == QUEUED and self.queue is not None:  # -- workers (issue 12) --
            await self.queue.cancel_queued(stream_id)
        return meta.to_json(self._subscribers(stream_id))

    # -- /v1/chat: a chat's reply, whichever gateway runs it --

    async def chat_started(self, tenant: str, chat_id: str, stream_id: str) -> None:
        """Record the chat's reply, for a resume or stop on another gateway."""
        engine = self.redis
        if engine is not None:  # NATS: a chat resumes on its own gateway only
            await engine.client.set(engine.keys.chat(tenant, chat_id), stream_id, ex=TTL_S)

    async def chat_reply(self, principal: Principal, tenant: str, chat_id: str) -> str | None:
        """The chat's running reply on another gateway (None: none)."""
        engine = self.redis
        if engine is None:
            return None
        raw: Any = await engine.client.get(engine.keys.chat(tenant, chat_id))
        if raw is None:
            return None
        meta = await self._meta(principal, raw.decode())
        return None if meta is None or meta.state not in LIVE else meta.stream_id

    async def chat_stopped(self, tenant: str, chat_id: str) -> None:
        """The chat has no reply any more."""
        engine = self.redis
        if engine is not None:
            await engine.client.delete(engine.keys.chat(tenant, chat_id))

    def _subscribers(self, stream_id: str) -> int:
        follower = self.engine.followed().get(stream_id)
        return 0 if follower is None else len(follower.readers)
