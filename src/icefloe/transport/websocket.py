"""``GET /v1/ws``: streams over one WebSocket, with credit, control, input and sessions.

One connection multiplexes any number of streams and topic subscriptions.
:func:`serve_websocket` runs the handshake checks, then one
:class:`WsConnection` until the client leaves or is cut. The connection is
made of parts, each one concept:

* the receive loop (here): each message is inflated if it is zstd, decoded
  (:func:`~icefloe.core.ops.decode_client`) and handed to the op dispatch;
  bad input never closes the connection by itself: it gets ``error
  bad_request``. A flood of it (see
  :class:`~icefloe.core.badmeter.BadMessageMeter`) closes with 1008; a frame
  over the size limit is closed with 1009 by the server's WebSocket layer
  (uvicorn ``ws_max_size``), and a zstd message inflating past ``max_frame``
  by this loop;
* the op dispatch (:class:`~icefloe.transport.ws_dispatch.WsOps`): every op
  checked against the principal (scopes, and the tenant of each stream:
  another tenant's stream answers ``not_found``) and carried out;
* the followed streams (:class:`~icefloe.transport.ws_pump.WsStreams`): one
  pump task and one credit window per stream, as docs/websocket.md specifies
  (``credit``, ``pause``, ``resume``, ``unsubscribe``);
* the session (:class:`~icefloe.transport.ws_session.WsSession`): ``hello``,
  ``ack`` and resumption from the last ack after a reconnect;
* the topic subscriptions (:class:`~icefloe.transport.ws_topics.WsTopics`);
* the send path (:class:`~icefloe.transport.ws_sender.WsSender`): the
  streams share it by weighted fair queueing on their priority, chunks ready
  together may go out packed in one ``chunks`` op (``hello {batch: true}``),
  every message may be zstd-compressed (``icefloe.v1.msgpack+zstd``) and the
  connection may have a bandwidth limit (``bytes_per_s``).

Every close the server sends comes from
:func:`~icefloe.core.wire_errors.close_frame`: a flood of bad messages and a
slow consumer (one send not finished within ``send_timeout_s``) 1008, a zstd
message too big once inflated 1009, a bug in the send path 1011, the session
resumed on another connection 4000, a draining gateway (SIGTERM, issue 12)
4001: reconnect, to any gateway, and resume the session.

Limits: streams per connection (``max_streams``), credit per stream
(``MAX_CREDIT``), bytes queued per stream (``stream_queue_bytes``), one send
at a time per connection; the bytes a connection's zstd messages inflate to
are paced (``inflate_bytes_per_s``): a 1 KiB frame may inflate to
``max_frame``, so the wire bytes alone do not bound a client's cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from starlette.requests import HTTPConnection

from icefloe.core.badmeter import BadMessageMeter
from icefloe.core.codec import Format
from icefloe.core.ops import BadRequest, ClientOp, ServerOp, decode_client
from icefloe.core.sessions import SessionTable
from icefloe.core.token_bucket import TokenBucket
from icefloe.core.wire_errors import CloseReason, ErrorCode, close_frame
from icefloe.core.wszstd import available as zstd_available
from icefloe.core.wszstd import decompress_client_frame, is_zstd
from icefloe.exceptions import DecodeError, FrameTooLarge
from icefloe.runtime.fair import priority_weight
from icefloe.runtime.throttle import pace
from icefloe.transport.auth import Principal
from icefloe.transport.errors import HttpError
from icefloe.transport.ws_dispatch import WsOps, WsReplies
from icefloe.transport.ws_edge import WsEdge
from icefloe.transport.ws_handshake import choose_subprotocol, deny, origin_denial, page_scheme
from icefloe.transport.ws_pump import WsStreams
from icefloe.transport.ws_sender import WsSender, WsSendStatistics
from icefloe.transport.ws_session import WsSession
from icefloe.transport.ws_settings import MAX_CREDIT, WsSettings
from icefloe.transport.ws_topics import WsTopics

__all__ = [
    "MAX_CREDIT",
    "WsConnection",
    "WsSettings",
    "choose_subprotocol",
    "origin_denial",
    "serve_websocket",
]

#: the longest one connection's queued ops run before the loop serves others (s)
OP_SLICE_S = 0.002

logger = logging.getLogger("icefloe.ws")


class _Cut(Exception):
    """End the connection with a close frame."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(reason.name)
        self.reason = reason


class WsConnection:
    """One accepted WebSocket: its receive loop and its parts (see the module docstring)."""

    def __init__(
        self,
        edge: WsEdge,
        settings: WsSettings,
        principal: Principal,
        fmt: Format,
        send: Any,
        sessions: SessionTable,
        *,
        compress: bool = False,
        limit_key: str | None = None,
    ) -> None:
        self.edge = edge
        self.settings = settings
        self.principal = principal
        self.fmt = fmt
        #: zstd in both directions (``icefloe.v1.msgpack+zstd``)
        self.compress = compress
        self._sender = sender = WsSender(
            send,
            fmt,
            compress=compress,
            send_timeout_s=settings.send_timeout_s,
            cut=self._cut,
            quantum_bytes=settings.quantum_bytes,
            stream_queue_bytes=settings.stream_queue_bytes,
            batch_bytes=settings.batch_bytes,
            bytes_per_s=settings.bytes_per_s,
            burst_bytes=settings.burst_bytes,
            weight=priority_weight,
        )
        self._replies = replies = WsReplies(sender, fmt)
        # The session's owner key: tenant and subject.
        self._session = session = WsSession(
            sessions,
            f"{principal.tenant}\x00{principal.subject}",
            attach=lambda sid: edge.ws_attach(sid, self),
            detach=lambda sid: edge.ws_detach(sid, self),
        )
        self._streams = streams = WsStreams(sender, fmt, session, settings.window)
        #: the connection's hub topic subscriptions
        self.topics = WsTopics(
            edge.hub,
            principal,
            fmt,
            sender,
            replies.error,
            max_subs=settings.max_topic_subs,
            budget=edge.publish_budget,
            log=edge.topic_log,  # a store or the backplane numbers topics (issues 11, 12)
        )
        # limit_key: start/publish/sub_topic count against the rate (issue 15, item 3)
        self._ops = WsOps(
            edge,
            settings,
            principal,
            sender,
            replies,
            session,
            streams,
            self.topics,
            limit_key=limit_key,
        )
        self._bad = BadMessageMeter(
            time.monotonic, burst=settings.bad_burst, rate=settings.bad_per_s
        )
        rate = settings.inflate_bytes_per_s
        self._inflate_budget = (
            None
            if rate is None or not compress
            else TokenBucket(rate, settings.inflate_burst_bytes, time.monotonic)
        )
        #: bytes the client's zstd messages inflated to
        self.inflated_bytes = 0
        self._closing: CloseReason | None = None
        self._owner: asyncio.Task[Any] | None = None

    @property
    def session_id(self) -> str | None:
        """The connection's session, once it has one."""
        return self._session.id

    # -- sending -------------------------------------------------------------------

    async def send(self, *frames: bytes | str) -> None:
        """Send frames in order, as one uninterrupted run, within the send timeout."""
        await self._sender.send(*frames)

    def statistics(self) -> WsSendStatistics:
        """The connection's send path: messages, bytes, batches, queues, pacing."""
        return self._sender.statistics()

    async def reply(self, op: ServerOp) -> None:
        """Send a server op at once (it waits at most for the write in progress)."""
        await self._replies.reply(op)

    async def error(
        self,
        code: ErrorCode,
        message: str,
        *,
        ref: str | None = None,
        stream_id: str | None = None,
    ) -> None:
        """Send an ``error`` op."""
        await self._replies.error(code, message, ref=ref, stream_id=stream_id)

    def take_over(self) -> None:
        """Another connection resumed this session: this one ends (4000)."""
        self._session.release()  # the session is no longer ours to park
        self._cut(CloseReason.SESSION_TAKEN)

    def resumed_elsewhere(self) -> None:
        """Another gateway resumes this session (issue 12): this connection ends
        (4000) and parks the session, so its last acks reach the other gateway."""
        self._cut(CloseReason.SESSION_TAKEN)

    def hand_off(self) -> None:
        """The gateway drains (issue 12): close with 4001, reconnect and resume."""
        self._cut(CloseReason.DRAINING)

    def _cut(self, reason: CloseReason) -> None:
        """End the connection from any task: the receive loop closes for ``reason``."""
        if self._closing is None:
            self._closing = reason
            if self._owner is not None:
                self._owner.cancel()

    # -- the receive loop ----------------------------------------------------------

    async def run(self, receive: Any) -> tuple[int, str] | None:
        """Serve until the client leaves or is cut; the close to send (code, reason), if any."""
        self._owner = asyncio.current_task()
        clock = time.perf_counter
        try:
            if self._closing is not None:  # cut before it ran: a draining gateway
                return close_frame(self._closing)
            slice_start = clock()
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    return None
                if kind != "websocket.receive":
                    continue
                frame = message.get("text")
                if frame is None:
                    frame = message.get("bytes") or b""
                await self.handle(frame)
                # A pipelined burst arrives already queued, so neither receive()
                # nor most ops suspend: without this, one client's burst of
                # publishes held the loop for every other client (issue 15).
                if clock() - slice_start >= OP_SLICE_S:
                    await asyncio.sleep(0)
                    slice_start = clock()
        except asyncio.CancelledError:
            if self._closing is None:
                raise
            return close_frame(self._closing)
        except _Cut as cut:
            return close_frame(cut.reason)
        except OSError:
            return None  # the peer is gone: a send found the connection closed
        finally:
            self._owner = None
            await self.detach()

    async def handle(self, frame: bytes | str) -> None:
        """Decode one client message and carry its op out; answer a refused op
        (or a bad message) with an ``error`` op."""
        try:
            if self.compress and isinstance(frame, bytes) and is_zstd(frame):
                frame = await self._inflate(frame)
            op = decode_client(frame, self.fmt)
        except BadRequest as exc:
            if self._bad.record():
                raise _Cut(CloseReason.BAD_MESSAGE_FLOOD) from None
            await self._replies.error(exc.code, exc.message, ref=exc.ref)
            return
        try:
            await self._ops.dispatch(op)
        except HttpError as exc:
            await self._replies.error(exc.code, exc.message, ref=op.ref)
        except (_Cut, asyncio.CancelledError, TimeoutError, OSError):
            raise  # OSError: the peer is gone, not a failed op
        except Exception:
            # A bug must not become a 1011 for the client: report, keep serving.
            logger.exception("WebSocket op %s failed", type(op).__name__)
            await self._replies.error(ErrorCode.INTERNAL, "internal error", ref=op.ref)

    async def dispatch(self, op: ClientOp) -> None:
        """Carry out one decoded op (:meth:`WsOps.dispatch`).

        :raises HttpError: the op is refused.
        """
        await self._ops.dispatch(op)

    async def _inflate(self, frame: bytes) -> bytes:
        """A zstd client message, decompressed within ``max_frame`` (over it: 1009)
        once the connection's inflate budget is no longer overdrawn."""
        budget = self._inflate_budget
        if budget is not None:
            await pace(budget, 0)  # wait out the debt of earlier messages
        try:
            out = decompress_client_frame(frame, self.settings.max_frame)
        except FrameTooLarge:
            raise _Cut(CloseReason.TOO_BIG) from None
        except DecodeError as exc:
            raise BadRequest(str(exc)) from None
        if budget is not None:
            budget.charge(len(out))
        self.inflated_bytes += len(out)
        return out

    # -- the end -----------------------------------------------------------------------

    async def detach(self) -> None:
        """Stop every pump and park the session for resumption."""
        with contextlib.suppress(asyncio.CancelledError):
            await self.topics.aclose()
        await self._streams.aclose()
        await self._sender.aclose()
        self._session.park()


# -- the handshake -----------------------------------------------------------------------


async def serve_websocket(edge: WsEdge, scope: Any, receive: Any, send: Any) -> None:
    """``/v1/ws``: the handshake checks, then a :class:`WsConnection` until it ends."""
    if (await receive())["type"] != "websocket.connect":
        return
    conn = HTTPConnection(scope)
    # The Host first: same-origin below compares the Origin with it.
    denial = edge.host_denial(conn) or origin_denial(
        conn,
        edge.settings.allow_origins,
        scheme=page_scheme(conn, forwarded_proto=edge.forwarded_proto(conn)),
    )
    principal: Principal | None = None
    if denial is None:
        try:
            principal = edge.principal(conn, None)  # each op checks its own scope
        except HttpError as exc:
            denial = exc
    settings = edge.settings.ws
    chosen = choose_subprotocol(
        list(scope.get("subprotocols") or ()), zstd=settings.zstd and zstd_available()
    )
    if denial is None and chosen is None:
        denial = HttpError(ErrorCode.BAD_REQUEST, "offer icefloe.v1.json or icefloe.v1.msgpack")
    key = ""
    if denial is None:
        key = conn.state.limit_key
        retry = edge.limiter.open_connection(key)
        if retry is not None:
            edge.metrics.requests_limited.inc()
            denial = HttpError(
                ErrorCode.LIMIT_EXCEEDED, "connection limit", {"Retry-After": str(int(retry))}
            )
    if denial is not None or principal is None or chosen is None:
        await deny(scope, send, denial or HttpError(ErrorCode.FORBIDDEN, "refused"))
        return
    subprotocol, fmt, compress = chosen
    try:
        await send({"type": "websocket.accept", "subprotocol": subprotocol})
        ws = WsConnection(
            edge, settings, principal, fmt, send, edge.sessions, compress=compress, limit_key=key
        )
        edge.metrics.ws.opened(ws)
        edge.drain.enlist(ws)  # lifecycle (issue 12)
        try:
            edge.sessions.expire()
            close = await ws.run(receive)
            if close is not None:
                # Bounded: a slow consumer's socket is full, and uvicorn's send
                # waits for room that never comes; returning lets uvicorn close it.
                with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                    async with asyncio.timeout(settings.send_timeout_s):
                        code, reason = close
                        await send({"type": "websocket.close", "code": code, "reason": reason})
        finally:
            edge.drain.leave(ws)
            edge.metrics.ws.closed_conn(ws)
    finally:
        edge.limiter.close_connection(key)
