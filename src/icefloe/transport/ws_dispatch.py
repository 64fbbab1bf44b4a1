"""The ops of one ``/v1/ws`` connection: each client op checked and carried out.

:class:`WsOps` takes every decoded client op (:mod:`icefloe.core.ops`),
checks it against the principal (scopes, and the tenant of each stream:
another tenant's stream answers ``not_found``) and the connection's limits,
and hands it to the part that owns it: the followed streams
(:class:`~icefloe.transport.ws_pump.WsStreams`), the session
(:class:`~icefloe.transport.ws_session.WsSession`), the topic subscriptions
(:class:`~icefloe.transport.ws_topics.WsTopics`) or the flow. A refused op
raises :class:`~icefloe.transport.errors.HttpError`, which the connection
answers with an ``error`` op carrying its :class:`~icefloe.core.wire_errors.ErrorCode`;
the connection stays open.

The ops that cost the server work beyond the connection (``start``,
``publish``, ``sub_topic``) each count as one request against the
principal's request rate and its tenant's, the same buckets as its HTTP
requests: over the rate the op is refused with ``rate_limited`` (its message
says how many seconds to wait) and nothing else happens; the connection
stays open. A refused op is not carried out, so a flood costs a token-bucket
check per op, not a run, a hub publish or a subscription.

:class:`WsReplies` sends the server ops that answer client ops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from icefloe.core.codec import Format
from icefloe.core.messages import Headers
from icefloe.core.ops import (
    Ack,
    Cancel,
    ClientOp,
    Credit,
    Error,
    Hello,
    Input,
    Pause,
    Ping,
    Pong,
    Publish,
    Resume,
    ServerOp,
    Start,
    Started,
    Subscribe,
    SubTopic,
    Unsubscribe,
    Unsubscribed,
    UnsubTopic,
    Welcome,
    encode_server,
)
from icefloe.core.sessions import SessionError
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import (
    EndOfStream,
    StreamClosedError,
    StreamError,
    StreamNotFound,
    WouldBlock,
)
from icefloe.runtime.stream_types import StreamPhase
from icefloe.transport.auth import Principal, Scope
from icefloe.transport.errors import HttpError
from icefloe.transport.principals import ANY_TENANT
from icefloe.transport.stored_reader import open_for_subscriber  # issue 11
from icefloe.transport.ws_keeper import KeptSessionTable  # issue 11
from icefloe.transport.ws_pump import WsReader, WsStreams
from icefloe.transport.ws_remote import REMOTE_PRIORITY, cancel_remote, open_remote  # issue 12
from icefloe.transport.ws_sender import WsSender
from icefloe.transport.ws_session import WsSession
from icefloe.transport.ws_settings import WsSettings
from icefloe.transport.ws_topics import WsTopics

if TYPE_CHECKING:
    from icefloe.transport.ws_edge import WsEdge

__all__ = ["WsOps", "WsReplies"]

#: states of a stream that ended without its ``done`` chunk
_ABNORMAL = frozenset({StreamPhase.FAILED.label, StreamPhase.CANCELLED.label})


class WsReplies:
    """Sends the server ops of one connection that are not stream chunks."""

    __slots__ = ("_fmt", "_sender")

    def __init__(self, sender: WsSender, fmt: Format) -> None:
        self._sender = sender
        self._fmt = fmt

    async def reply(self, op: ServerOp) -> None:
        """Send ``op`` at once (it waits at most for the write in progress)."""
        await self._sender.send(encode_server(op, self._fmt))

    async def reply_in_order(self, op: ServerOp) -> None:
        """Send ``op`` behind the chunk and event runs already taken (paced like them)."""
        await self._sender.send_bulk([encode_server(op, self._fmt)])

    async def error(
        self,
        code: ErrorCode,
        message: str,
        *,
        ref: str | None = None,
        stream_id: str | None = None,
    ) -> None:
        """Send an ``error`` op."""
        await self.reply(Error(code=code, message=message, ref=ref, stream_id=stream_id))


class WsOps:
    """Carries out the client ops of one connection (see the module docstring)."""

    def __init__(
        self,
        edge: WsEdge,
        settings: WsSettings,
        principal: Principal,
        sender: WsSender,
        replies: WsReplies,
        session: WsSession,
        streams: WsStreams,
        topics: WsTopics,
        *,
        limit_key: str | None = None,
    ) -> None:
        self._edge = edge
        self._settings = settings
        self._principal = principal
        self._sender = sender
        self._replies = replies
        self._session = session
        self._streams = streams
        self._topics = topics
        #: the principal's key in the edge's limiter (the handshake's); None:
        #: ops are not counted (a connection made without the edge's checks)
        self.limit_key = limit_key

    async def dispatch(self, op: ClientOp) -> None:
        """Carry out ``op``.

        :raises HttpError: the op is refused; answer it with an ``error`` op.
        """
        # The hot ops first: a match tries its cases in order.
        match op:
            case Credit():
                self._streams.grant(op.stream_id, op.n)
            case Ack():
                self._ack(op)
            case Start():
                self._charge()
                await self._start(op)
            case Subscribe():
                await self._subscribe(op.stream_id, op.from_seq, ref=op.ref)
            case Pause():
                self._streams.pause(op.stream_id)
            case Resume():
                self._streams.resume(op.stream_id)
            case Cancel():
                await self._cancel(op)
            case Input():
                self._input(op)
            case Hello():
                await self._hello(op)
            case Ping():
                await self._replies.reply(Pong(ref=op.ref))
            case Publish():
                self._charge()
                self._require(Scope.TOPICS_PUBLISH)
                self._topics.publish(op)
            case SubTopic():
                self._charge()
                self._sub_topic(op)
            case Unsubscribe():
                await self._streams.stop(op.stream_id)
                # A run already taken with the stream's chunks goes out first.
                await self._replies.reply_in_order(Unsubscribed(stream_id=op.stream_id, ref=op.ref))
            case UnsubTopic():
                await self._topics.unsubscribe(op.sub_id)
                await self._replies.reply_in_order(Unsubscribed(sub_id=op.sub_id, ref=op.ref))
            case _:  # pragma: no cover - decode_client returns only the ops above
                raise HttpError(ErrorCode.BAD_REQUEST, "unknown op")

    # -- checks ----------------------------------------------------------------------

    def _charge(self) -> None:
        """Count the op against the principal's request rate (and its tenant's)."""
        key = self.limit_key
        if key is None:
            return
        principal = self._principal
        # The unrestricted principal (auth off) has no tenant to share a rate.
        tenant = None if principal.tenant == ANY_TENANT else principal.tenant
        retry = self._edge.limiter.check_request(key, principal.limits, tenant=tenant)
        if retry is not None:
            self._edge.metrics.requests_limited.inc()
            raise HttpError(
                ErrorCode.RATE_LIMITED, f"too many requests; retry after {int(retry)} s"
            )

    def _require(self, scope: Scope) -> None:
        if not self._principal.has(scope):
            raise HttpError(ErrorCode.FORBIDDEN, f"missing scope {scope.value}")

    def _owned(self, stream_id: str) -> None:
        """Refuse a stream that does not exist or that the principal may not see."""
        state = self._edge.flow.brief(stream_id)
        if state is None or not self._principal.can_access_tenant(state.tenant):
            raise HttpError(ErrorCode.NOT_FOUND, "no such stream")

    def _check_room(self) -> None:
        if len(self._streams) + len(self._topics) >= self._settings.max_streams:
            raise HttpError(ErrorCode.LIMIT_EXCEEDED, "too many streams on this connection")
        if not self._session.has_room():
            raise HttpError(ErrorCode.LIMIT_EXCEEDED, "too many streams in this session")

    # -- session ops -------------------------------------------------------------------

    async def _hello(self, op: Hello) -> None:
        session = self._session
        if session.id is not None and not op.resume:
            raise HttpError(ErrorCode.BAD_REQUEST, "hello must come first")
        batch = self._sender.batch = op.batch  # the latest accepted hello decides
        window = self._settings.window
        if op.resume and op.session_id:
            # A session from before a restart (issue 11), or from another gateway (issue 12).
            table = self._edge.sessions
            if isinstance(table, KeptSessionTable):
                await table.load(op.session_id, session.owner_key)
            try:
                info = session.resume(op.session_id)
            except SessionError as exc:
                await self._replies.error(exc.code, str(exc), ref=op.ref)
            else:
                await self._replies.reply(
                    Welcome(session_id=op.session_id, resumed=True, window=window, batch=batch)
                )
                for stream_id, last_ack in info.subscriptions.items():
                    try:
                        await self._subscribe(stream_id, last_ack + 1, ref=None, resuming=True)
                    except HttpError as exc:
                        await self._replies.error(exc.code, exc.message, stream_id=stream_id)
                        session.forget(stream_id)
                return
        sid = session.ensure()
        await self._replies.reply(
            Welcome(session_id=sid, resumed=False, window=window, batch=batch)
        )

    def _ack(self, op: Ack) -> None:
        # Acks stay valid after a stream's terminal went out (the follow is gone
        # but the session still lists it until the terminal is acked).
        stream_id = op.stream_id
        if not self._session.ack(stream_id, op.seq) and not self._streams.ended_here(stream_id):
            raise HttpError(ErrorCode.NOT_FOUND, "this connection does not follow that stream")

    # -- stream ops --------------------------------------------------------------------

    async def _start(self, op: Start) -> None:
        self._require(Scope.STREAMS_START)
        h = op.headers
        tenant = h.tenant if h.tenant is not None else self._principal.tenant
        if tenant == "*":
            raise HttpError(ErrorCode.BAD_REQUEST, "headers.tenant is required")
        # Checked before the run starts: a refused start must not leave a run behind.
        self._require(Scope.STREAMS_READ)
        self._check_room()
        started, _ = await self._edge.start_run(
            self._principal,
            op.payload,
            Headers(tenant=tenant, topic=h.topic, priority=h.priority),
            op.idempotency_key,  # issue 11: as POST /v1/streams's
        )
        # The session follows the new stream, kept, before the client learns its
        # id: a client that holds the id finds its session after a crash.
        await self._session.follow(started.stream_id, 0)
        await self._replies.reply(Started(ref=op.ref, stream_id=started.stream_id))
        await self._subscribe(started.stream_id, 0, ref=op.ref, priority=h.priority)

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
        if stream_id in self._streams:
            raise HttpError(ErrorCode.CONFLICT, "this connection already follows that stream")
        self._check_room()
        flow = self._edge.flow
        # -- durable streams (issue 11): what memory no longer holds, the store may --
        can_access = self._principal.can_access_tenant
        stored = await open_for_subscriber(flow, can_access, stream_id, from_seq, None)
        if stored is not None:
            if not resuming:
                try:
                    await self._session.follow(stream_id, stored.next_seq)
                except BaseException:
                    stored.close()
                    raise
            now = flow.brief(stream_id)
            fallback = 0 if now is None else now.priority
            self._streams.follow(stored, fallback if priority is None else priority)
            return
        # -- end of durable streams --
        # -- backplane (issue 12): a stream another gateway produces --
        try:
            remote = await open_remote(
                self._edge.backplane, flow, self._principal, stream_id, from_seq
            )
        except EndOfStream:
            self._session.forget(stream_id)  # everything up to the end was acked
            return
        if remote is not None:
            await self._follow(remote, resuming, REMOTE_PRIORITY if priority is None else priority)
            return
        # -- end of backplane --
        brief = flow.brief(stream_id)
        if brief is None:
            gone = flow.finished(stream_id)
            if gone is None or not self._principal.can_access_tenant(gone.tenant):
                raise HttpError(ErrorCode.NOT_FOUND, "no such stream")
            if from_seq is not None and from_seq >= gone.next_seq:
                # Everything up to the terminal was acked: nothing to resend.
                self._session.forget(stream_id)
                return
            raise HttpError(ErrorCode.HISTORY_GONE, "the stream ended and its history is gone")
        if not self._principal.can_access_tenant(brief.tenant):
            raise HttpError(ErrorCode.NOT_FOUND, "no such stream")
        try:
            try:
                reader = flow.subscribe(stream_id, from_seq)
            except StreamError:
                if brief.state not in _ABNORMAL:
                    raise
                # A cancel discarded its chunks: the terminal is the news, as over HTTP.
                reader = flow.subscribe(stream_id, None)
        except StreamError as exc:
            raise HttpError(exc.code, exc.message) from None
        except ValueError as exc:
            raise HttpError(ErrorCode.BAD_REQUEST, str(exc)) from None
        except StreamNotFound:
            raise HttpError(ErrorCode.NOT_FOUND, "no such stream") from None
        if priority is None:
            # Headers.priority of the stream's start (0 if it is already gone).
            now = flow.brief(stream_id)
            priority = 0 if now is None else now.priority
        await self._follow(reader, resuming, priority)

    async def _follow(self, reader: WsReader, resuming: bool, priority: int) -> None:
        """Follow ``reader`` on this connection (and, unless resuming, in the
        session, kept before its first chunk goes out)."""
        if not resuming:
            try:
                await self._session.follow(reader.stream_id, reader.next_seq)
            except BaseException:
                reader.close()
                raise
        self._streams.follow(reader, priority)

    async def _cancel(self, op: Cancel) -> None:
        self._require(Scope.STREAMS_CANCEL)
        edge = self._edge
        # -- backplane (issue 12): the producing gateway cancels it --
        if await cancel_remote(edge.backplane, edge.flow, self._principal, op.stream_id):
            return
        self._owned(op.stream_id)
        self._edge.flow.cancel(op.stream_id)

    def _input(self, op: Input) -> None:
        self._require(Scope.STREAMS_START)
        self._owned(op.stream_id)
        try:
            self._edge.flow.send_input(op.stream_id, op.data)
        except StreamNotFound:
            raise HttpError(ErrorCode.NOT_FOUND, "no such stream") from None
        except StreamClosedError:
            raise HttpError(ErrorCode.STREAM_CLOSED, "the stream has ended") from None
        except WouldBlock as exc:
            raise HttpError(ErrorCode.LIMIT_EXCEEDED, str(exc)) from None

    # -- topic ops ---------------------------------------------------------------------

    def _sub_topic(self, op: SubTopic) -> None:
        self._require(Scope.TOPICS_READ)
        if len(self._streams) + len(self._topics) >= self._settings.max_streams:
            raise HttpError(ErrorCode.LIMIT_EXCEEDED, "too many subscriptions on this connection")
        self._topics.subscribe(op)
