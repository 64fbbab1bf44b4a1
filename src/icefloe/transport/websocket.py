"""``GET /v1/ws``: streams over one WebSocket, with credit, control, input and sessions.

One connection multiplexes any number of streams. Each subscribed stream
has its own pump task and its own credit, as DESIGN.md specifies:

* Every chunk sent consumes one credit; at 0 the pump stops reading, and
  because a WebSocket reader is a *blocking* reader of its stream, the
  producer's ``emit_chunk`` waits once the stream's buffer is full. Memory
  stays flat: the stream holds at most its buffer, the pump nothing.
* ``pause`` stops the pump as credit 0 does; ``resume`` continues; nothing
  is lost either way.
* ``ack`` records, in the connection's session, the last seq the client
  holds durably. A client that reconnects with ``hello {session_id,
  resume: true}`` within the session TTL gets every subscription back,
  resent from the seq after its last ack (from the stream's history).
* ``unsubscribe`` stops one stream's pump, drops its queued chunks and
  takes it out of the session; the run goes on for its other readers.
  Topic subscriptions (``sub_topic``, ``unsub_topic``) are
  :class:`~icefloe.transport.ws_topics.WsTopics`'.
* Bad input never closes the connection by itself: it gets ``error
  bad_request``. A flood of it (see :class:`~icefloe.core.badmeter.BadMessageMeter`)
  closes with 1008; a frame over the size limit is closed with 1009 by the
  server's WebSocket layer (uvicorn ``ws_max_size``).
* Every op is checked against the principal: scopes, and the tenant of
  each stream (another tenant's stream answers ``not_found``).

Sending is :class:`~icefloe.transport.ws_sender.WsSender`'s: the streams of
a connection share it by weighted fair queueing on their priority, chunks
ready together may go out packed in one ``chunks`` op (``hello {batch:
true}``), every message may be zstd-compressed (``icefloe.v1.msgpack+zstd``)
and the connection may have a bandwidth limit (``bytes_per_s``).

Limits: streams per connection (``max_streams``), credit per stream
(``MAX_CREDIT``), bytes queued per stream (``stream_queue_bytes``), one send
at a time per connection, each within ``send_timeout_s`` or the client is
cut (1008, "slow consumer"); a zstd client message inflating past
``max_frame`` is cut with 1009, and the bytes a connection's zstd messages
inflate to are paced (``inflate_bytes_per_s``): a 1 KiB frame may inflate
to ``max_frame``, so the wire bytes alone do not bound a client's cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from icefloe.core.badmeter import BadMessageMeter
from icefloe.core.codec import Format
from icefloe.core.messages import Headers
from icefloe.core.ops import (
    Ack,
    BadRequest,
    Cancel,
    Credit,
    Error,
    Hello,
    Input,
    Pause,
    Ping,
    Pong,
    Publish,
    Resume,
    Start,
    Started,
    Subscribe,
    SubTopic,
    Unsubscribe,
    Unsubscribed,
    UnsubTopic,
    Welcome,
    decode_client,
    encode_chunk,
    encode_server,
)
from icefloe.core.sessions import SessionError, SessionTable
from icefloe.core.wire_errors import ErrorCode
from icefloe.core.wszstd import available as zstd_available
from icefloe.core.wszstd import decompress_client_frame, is_zstd
from icefloe.exceptions import (
    DecodeError,
    FrameTooLarge,
    StreamClosedError,
    StreamError,
    WouldBlock,
)
from icefloe.runtime.fair import priority_weight
from icefloe.runtime.subscription import Subscription
from icefloe.transport.auth import Principal, Scope
from icefloe.transport.errors import HttpError
from icefloe.transport.ws_handshake import choose_subprotocol, deny, origin_denial
from icefloe.transport.ws_sender import ByteBudget, WsSender, WsSendStatistics
from icefloe.transport.ws_settings import MAX_CREDIT, WsSettings
from icefloe.transport.ws_topics import WsTopics

if TYPE_CHECKING:
    from icefloe.transport.edge import EdgeContext

__all__ = [
    "MAX_CREDIT",
    "WsConnection",
    "WsSettings",
    "choose_subprotocol",
    "origin_denial",
    "serve_websocket",
]

logger = logging.getLogger("icefloe.ws")

#: ended streams a connection remembers, so that ops crossing their end are no-ops
MAX_ENDED = 1024


class _Cut(Exception):
    """End the connection with a close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Follow:
    """One stream followed on one connection: its reader, credit and pump.

    Its chunks wait in the connection's :class:`WsSender` under its stream id.
    """

    __slots__ = ("credit", "paused", "reader", "stopped", "stream_id", "task")

    def __init__(self, reader: Subscription, credit: int) -> None:
        self.reader = reader
        self.stream_id = reader.stream_id
        self.credit = credit
        self.paused = False
        #: unsubscribed: the pump stops at its next turn
        self.stopped = False
        self.task: asyncio.Task[None] | None = None


class WsConnection:
    """The state of one accepted WebSocket: principal, session, followed streams."""

    def __init__(
        self,
        edge: EdgeContext,
        settings: WsSettings,
        principal: Principal,
        fmt: Format,
        send: Any,
        sessions: SessionTable,
        *,
        compress: bool = False,
    ) -> None:
        self.edge = edge
        self.settings = settings
        self.principal = principal
        self.fmt = fmt
        #: zstd in both directions (``icefloe.v1.msgpack+zstd``)
        self.compress = compress
        self._sender = WsSender(
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
        self.sessions = sessions
        self.session_id: str | None = None
        self.follows: dict[str, _Follow] = {}
        #: the connection's hub topic subscriptions
        self.topics = WsTopics(edge, principal, fmt, self._sender, self.error)
        # Streams that ended on this connection lately: ops crossing the end are no-ops.
        self._ended: OrderedDict[str, None] = OrderedDict()
        # The seq of each stream's done chunk once it was sent, until acked.
        self._end_seqs: dict[str, int] = {}
        self._bad = BadMessageMeter(
            time.monotonic, burst=settings.bad_burst, rate=settings.bad_per_s
        )
        rate = settings.inflate_bytes_per_s
        self._inflate_budget = (
            None
            if rate is None or not compress
            else ByteBudget(rate, settings.inflate_burst_bytes, time.monotonic)
        )
        #: bytes the client's zstd messages inflated to
        self.inflated_bytes = 0
        # The session's owner key (tenant and subject) and this connection's attachment.
        self._owner_key = f"{principal.tenant}\x00{principal.subject}"
        self._attachment: int | None = None
        self._closing: _Cut | None = None
        self._owner: asyncio.Task[Any] | None = None

    # -- sending -------------------------------------------------------------------

    async def send(self, *frames: bytes | str) -> None:
        """Send frames in order, as one uninterrupted run, within the send timeout."""
        await self._sender.send(*frames)

    def statistics(self) -> WsSendStatistics:
        """The connection's send path: messages, bytes, batches, queues, pacing."""
        return self._sender.statistics()

    async def reply(self, op: Any) -> None:
        await self.send(encode_server(op, self.fmt))

    async def reply_in_order(self, op: Any) -> None:
        """Reply behind the chunk and event runs already taken (paced like them)."""
        await self._sender.send_bulk([encode_server(op, self.fmt)])

    async def error(
        self, code: str, message: str, *, ref: str | None = None, stream_id: str | None = None
    ) -> None:
        await self.reply(Error(code=code, message=message, ref=ref, stream_id=stream_id))

    def take_over(self) -> None:
        """Another connection resumed this session: this one ends (4000)."""
        self.session_id = None  # the session is no longer ours to park
        self._cut(4000, "session resumed elsewhere")

    def _cut(self, code: int, reason: str) -> None:
        """End the connection from any task: the receive loop closes with ``code``."""
        if self._closing is None:
            self._closing = _Cut(code, reason)
            if self._owner is not None:
                self._owner.cancel()

    # -- the receive loop ----------------------------------------------------------

    async def run(self, receive: Any) -> tuple[int, str] | None:
        """Serve until the client leaves or is cut; the close to send, if any."""
        self._owner = asyncio.current_task()
        try:
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
        except asyncio.CancelledError:
            if self._closing is None:
                raise
            return self._closing.code, self._closing.reason
        except _Cut as cut:
            return cut.code, cut.reason
        except OSError:
            return None  # the peer is gone: a send found the connection closed
        finally:
            self._owner = None
            await self.detach()

    async def handle(self, frame: bytes | str) -> None:
        try:
            if self.compress and isinstance(frame, bytes) and is_zstd(frame):
                frame = await self._inflate(frame)
            op = decode_client(frame, self.fmt)
        except BadRequest as exc:
            if self._bad.record():
                raise _Cut(1008, "too many malformed messages") from None
            await self.error(ErrorCode.BAD_REQUEST, exc.message, ref=exc.ref)
            return
        try:
            await self.dispatch(op)
        except HttpError as exc:
            await self.error(exc.code, exc.message, ref=getattr(op, "ref", None))
        except (_Cut, asyncio.CancelledError, TimeoutError, OSError):
            raise  # OSError: the peer is gone, not a failed op
        except Exception:
            # A bug must not become a 1011 for the client: report, keep serving.
            logger.exception("WebSocket op %s failed", type(op).__name__)
            await self.error(ErrorCode.INTERNAL, "internal error", ref=getattr(op, "ref", None))

    async def _inflate(self, frame: bytes) -> bytes:
        """A zstd client message, decompressed within ``max_frame`` (over it: 1009)
        once the connection's inflate budget is no longer overdrawn."""
        budget = self._inflate_budget
        if budget is not None:
            wait = budget.charge(0)
            if wait > 0:
                await asyncio.sleep(wait)  # pacing the client's input, not synchronisation
        try:
            out = decompress_client_frame(frame, self.settings.max_frame)
        except FrameTooLarge:
            raise _Cut(1009, "message too big once decompressed") from None
        except DecodeError as exc:
            raise BadRequest(str(exc)) from None
        if budget is not None:
            budget.charge(len(out))
        self.inflated_bytes += len(out)
        return out

    async def dispatch(self, op: Any) -> None:
        match op:
            case Credit():
                self._credit(op)
            case Ack():
                self._ack(op)
            case Start():
                await self._start(op)
            case Subscribe():
                await self._subscribe(op.stream_id, op.from_seq, ref=op.ref)
            case Pause():
                follow = self._followed(op.stream_id)
                if follow is not None:
                    follow.paused = True
            case Resume():
                follow = self._followed(op.stream_id)
                if follow is not None:
                    follow.paused = False
                    follow.reader.interrupt()
            case Cancel():
                self._cancel(op)
            case Input():
                self._input(op)
            case Hello():
                await self._hello(op)
            case Ping():
                await self.reply(Pong(ref=op.ref))
            case Publish():
                self._require(Scope.TOPICS_PUBLISH)
                self.topics.publish(op)
            case SubTopic():
                self._sub_topic(op)
            case Unsubscribe():
                await self._unsubscribe(op)
            case UnsubTopic():
                await self.topics.unsubscribe(op.sub_id)
                await self.reply_in_order(Unsubscribed(sub_id=op.sub_id, ref=op.ref))
            case _:  # pragma: no cover - decode_client returns only the ops above
                raise HttpError(ErrorCode.BAD_REQUEST, "unknown op")

    # -- ops -------------------------------------------------------------------------

    def _require(self, scope: Scope) -> None:
        if not self.principal.has(scope):
            raise HttpError(ErrorCode.FORBIDDEN, f"missing scope {scope.value}")

    def _owned(self, stream_id: str) -> str:
        """The stream's tenant, if it exists and the principal may see it."""
        state = self.edge.flow.brief(stream_id)
        if state is None or not self.principal.can_access_tenant(state.tenant):
            raise HttpError(ErrorCode.NOT_FOUND, "no such stream")
        return state.tenant

    def _followed(self, stream_id: str) -> _Follow | None:
        """The stream's follow; None if it just ended here (an op crossing the end
        on the wire is a no-op, as Reactive Streams' request(n) after the end)."""
        follow = self.follows.get(stream_id)
        if follow is None:
            if stream_id in self._ended:
                return None
            raise HttpError(ErrorCode.NOT_FOUND, "this connection does not follow that stream")
        return follow

    def _session(self) -> str:
        if self.session_id is None:
            try:
                sid = self.sessions.open(self._owner_key)
            except SessionError as exc:
                raise HttpError(exc.code, str(exc)) from None
            self.session_id = sid
            self._attachment = self.sessions.info(sid).attachment
            self.edge.ws_attach(sid, self)
        return self.session_id

    async def _hello(self, op: Hello) -> None:
        if self.session_id is not None and not op.resume:
            raise HttpError(ErrorCode.BAD_REQUEST, "hello must come first")
        sender = self._sender
        sender.batch = op.batch  # the latest accepted hello decides
        if op.resume and op.session_id:
            try:
                info = self.sessions.resume(op.session_id, self._owner_key)
            except SessionError as exc:
                await self.error(exc.code, str(exc), ref=op.ref)
            else:
                if self.session_id is not None:
                    self._park()  # this connection's own fresh session, unused
                self.session_id = op.session_id
                self._attachment = info.attachment
                self.edge.ws_attach(op.session_id, self)
                await self.reply(
                    Welcome(
                        session_id=op.session_id,
                        resumed=True,
                        window=self.settings.window,
                        batch=sender.batch,
                    )
                )
                for stream_id, last_ack in info.subscriptions.items():
                    try:
                        await self._subscribe(stream_id, last_ack + 1, ref=None, resuming=True)
                    except HttpError as exc:
                        await self.error(exc.code, exc.message, stream_id=stream_id)
                        self._forget(stream_id)
                return
        sid = self._session()
        await self.reply(
            Welcome(session_id=sid, resumed=False, window=self.settings.window, batch=sender.batch)
        )

    async def _start(self, op: Start) -> None:
        self._require(Scope.STREAMS_START)
        h = op.headers
        tenant = h.tenant if h.tenant is not None else self.principal.tenant
        if tenant == "*":
            raise HttpError(ErrorCode.BAD_REQUEST, "headers.tenant is required")
        # Checked before the run starts: a refused start must not leave a run behind.
        self._require(Scope.STREAMS_READ)
        self._check_room()
        started, _ = await self.edge.start_run(
            self.principal,
            op.payload,
            Headers(tenant=tenant, topic=h.topic, priority=h.priority),
            None,
        )
        await self.reply(Started(ref=op.ref, stream_id=started.stream_id))
        await self._subscribe(started.stream_id, 0, ref=op.ref, priority=h.priority)

    def _check_room(self) -> None:
        if len(self.follows) + len(self.topics) >= self.settings.max_streams:
            raise HttpError(ErrorCode.LIMIT_EXCEEDED, "too many streams on this connection")
        sid = self.session_id
        if sid is not None and not self.sessions.has_room(sid):
            raise HttpError(ErrorCode.LIMIT_EXCEEDED, "too many streams in this session")

    async def _subscribe(
        self,
        stream_id: str,
        from_seq: int | None,
        *,
        ref: str | None,
        resuming: bool = False,
        priority: int | None = None,
    ) -> None:
        self._require(Scope.STREAMS_READ)
        if stream_id in self.follows:
            raise HttpError(ErrorCode.CONFLICT, "this connection already follows that stream")
        self._check_room()
        flow = self.edge.flow
        stats = flow.brief(stream_id)
        if stats is None:
            gone = flow.finished(stream_id)
            if gone is None or not self.principal.can_access_tenant(gone.tenant):
                raise HttpError(ErrorCode.NOT_FOUND, "no such stream")
            if from_seq is not None and from_seq >= gone.next_seq:
                # Everything up to the terminal was acked: nothing to resend.
                self._forget(stream_id)
                return
            raise HttpError(ErrorCode.HISTORY_GONE, "the stream ended and its history is gone")
        if not self.principal.can_access_tenant(stats.tenant):
            raise HttpError(ErrorCode.NOT_FOUND, "no such stream")
        try:
            reader = flow.subscribe(stream_id, from_seq)
        except StreamError as exc:
            raise HttpError(exc.code, exc.message) from None
        except ValueError as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, str(exc)) from None
        except KeyError:
            raise HttpError(ErrorCode.NOT_FOUND, "no such stream") from None
        follow = _Follow(reader, self.settings.window)
        self.follows[stream_id] = follow
        if not resuming:
            try:
                self.sessions.subscribe(self._session(), stream_id, reader.next_seq)
            except SessionError as exc:
                reader.close()
                del self.follows[stream_id]
                raise HttpError(exc.code, str(exc)) from None
        if priority is None:
            priority = self._priority(stream_id)
        self._sender.add_stream(stream_id, priority)
        follow.task = asyncio.ensure_future(self._pump(follow))

    def _priority(self, stream_id: str) -> int:
        """``Headers.priority`` of the stream's start (0 if it is already gone)."""
        brief = self.edge.flow.brief(stream_id)
        return 0 if brief is None else brief.priority

    def _credit(self, op: Credit) -> None:
        follow = self._followed(op.stream_id)
        if follow is not None:
            follow.credit = min(MAX_CREDIT, follow.credit + op.n)
            follow.reader.interrupt()

    def _ack(self, op: Ack) -> None:
        # Acks stay valid after a stream's terminal went out (the follow is gone
        # but the session still lists it until the terminal is acked).
        sid = self.session_id
        if sid is None or not self.sessions.follows(sid, op.stream_id):
            if op.stream_id in self._ended:
                return  # the end was acked already: a late duplicate
            raise HttpError(ErrorCode.NOT_FOUND, "this connection does not follow that stream")
        self.sessions.ack(sid, op.stream_id, op.seq)
        end = self._end_seqs.get(op.stream_id)
        if end is not None and op.seq >= end:
            # The client holds the terminal: nothing left to resume.
            del self._end_seqs[op.stream_id]
            self._forget(op.stream_id)

    def _cancel(self, op: Cancel) -> None:
        self._require(Scope.STREAMS_CANCEL)
        self._owned(op.stream_id)
        self.edge.flow.cancel(op.stream_id)

    def _input(self, op: Input) -> None:
        self._require(Scope.STREAMS_START)
        self._owned(op.stream_id)
        try:
            self.edge.flow.send_input(op.stream_id, op.data)
        except KeyError:
            raise HttpError(ErrorCode.NOT_FOUND, "no such stream") from None
        except StreamClosedError:
            raise HttpError(ErrorCode.STREAM_CLOSED, "the stream has ended") from None
        except WouldBlock as exc:
            raise HttpError(ErrorCode.LIMIT_EXCEEDED, str(exc)) from None

    def _sub_topic(self, op: SubTopic) -> None:
        self._require(Scope.TOPICS_READ)
        if len(self.follows) + len(self.topics) >= self.settings.max_streams:
            raise HttpError(ErrorCode.LIMIT_EXCEEDED, "too many subscriptions on this connection")
        self.topics.subscribe(op)

    async def _unsubscribe(self, op: Unsubscribe) -> None:
        """Stop following a stream here and in the session; the run goes on.

        The pump stops at its next turn (it may finish a write in progress)
        and the stream's queued chunks are dropped unsent. An unsubscribe
        crossing the stream's end on the wire is answered all the same.
        """
        key = op.stream_id
        follow = self.follows.get(key)
        if follow is None and key not in self._ended:
            raise HttpError(ErrorCode.NOT_FOUND, "this connection does not follow that stream")
        if follow is not None:
            follow.stopped = True
            self._sender.discard(key)
            follow.reader.interrupt()
            if follow.task is not None:
                await asyncio.wait([follow.task])  # its finally marks the stream ended
            follow.reader.close()
            if self.follows.get(key) is follow:
                del self.follows[key]
        self._end_seqs.pop(key, None)
        self._forget(key)
        # A run already taken with the stream's chunks goes out first.
        await self.reply_in_order(Unsubscribed(stream_id=key, ref=op.ref))

    def _forget(self, stream_id: str) -> None:
        if self.session_id is not None:
            self.sessions.unsubscribe(self.session_id, stream_id)

    def _park(self) -> None:
        """Detach this connection's session, which a later hello may resume."""
        sid = self.session_id
        if sid is not None:
            self.edge.ws_detach(sid, self)
            self.sessions.detach(sid, time.monotonic(), attachment=self._attachment)
            self.session_id = None

    # -- one stream's pump -----------------------------------------------------------

    async def _pump(self, follow: _Follow) -> None:
        """Queue the stream's chunks on the send path as credit and room allow;
        then its terminal. Each chunk taken consumes one credit."""
        reader = follow.reader
        sender = self._sender
        key = follow.stream_id
        try:
            while not follow.stopped:
                if not reader.held():
                    end = reader.end_reason()
                    if isinstance(end, StreamError):
                        # An abnormal end has no seq to ack: the session lets go now.
                        self._forget(key)
                        self._push_error(key, end)
                        return
                    if end is not None:
                        return
                if follow.paused or follow.credit <= 0:
                    # Held back, but an end (a cancel) must still get through.
                    await reader.wait_changed()
                    continue
                room = sender.room(key)
                if room <= 0:
                    await sender.wait_room(key)
                    continue
                n = min(follow.credit, reader.held())
                if not n:
                    await reader.wait()
                    continue
                frames = self._encode_run(reader, n, room)
                n = len(frames)
                last = reader.peek(n - 1)
                if last.done:
                    self._end_seqs[key] = last.seq
                reader.skip(n)
                follow.credit -= n
                if sender.push_chunks(key, frames):
                    await sender.drain()  # an idle connection: no hand-over
        except StreamError as exc:  # overrun: not for blocking readers, but be exact
            with contextlib.suppress(OSError):
                self._push_error(key, exc)
        except (TimeoutError, OSError):
            pass  # the send path failed (and cut the connection), or it is ending
        finally:
            reader.close()
            sender.forget(key)
            if self.follows.get(key) is follow:
                del self.follows[follow.stream_id]
                self._ended[follow.stream_id] = None
                if len(self._ended) > MAX_ENDED:
                    self._ended.popitem(last=False)

    def _encode_run(self, reader: Subscription, n: int, room: int) -> list[bytes | str]:
        """Up to ``n`` held chunks, encoded, stopping once ``room`` bytes are used."""
        frames: list[bytes | str] = []
        used = 0
        fmt = self.fmt
        for i in range(n):
            frame = encode_chunk(reader.peek(i), fmt)
            frames.append(frame)
            used += len(frame)
            if used >= room:
                break
        return frames

    def _push_error(self, stream_id: str, exc: StreamError) -> None:
        """The stream's terminal ``error``, queued behind its chunks."""
        error = Error(code=exc.code.value, message=exc.message, stream_id=stream_id)
        self._sender.push_tail(stream_id, encode_server(error, self.fmt))

    # -- the end -----------------------------------------------------------------------

    async def detach(self) -> None:
        """Stop every pump and park the session for resumption."""
        tasks = [f.task for f in self.follows.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.topics.aclose()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._sender.aclose()
        for follow in list(self.follows.values()):
            follow.reader.close()
        self.follows.clear()
        self._park()


# -- the handshake -----------------------------------------------------------------------


async def serve_websocket(edge: EdgeContext, scope: Any, receive: Any, send: Any) -> None:
    """``/v1/ws``: the handshake checks, then a :class:`WsConnection` until it ends."""
    if (await receive())["type"] != "websocket.connect":
        return
    conn = HTTPConnection(scope)
    denial = origin_denial(conn, edge.settings.allow_origins)
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
        ws = WsConnection(edge, settings, principal, fmt, send, edge.sessions, compress=compress)
        edge.metrics.ws.opened(ws)
        try:
            edge.sessions.expire()
            close = await ws.run(receive)
            if close is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    await send({"type": "websocket.close", "code": close[0], "reason": close[1]})
        finally:
            edge.metrics.ws.closed_conn(ws)
    finally:
        edge.limiter.close_connection(key)
