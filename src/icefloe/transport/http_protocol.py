"""uvicorn's httptools HTTP/1.1 protocol with the connection limits enforced.

uvicorn's httptools path has no header limit of its own and times out only a
connection that has finished a request: one that connects and sends nothing,
or dribbles its request head, stays open forever, and an unterminated header
line grows in the parser without bound. :class:`GuardedHttpProtocol` feeds
each connection's events to a :class:`~icefloe.core.conntable.ConnectionTable`
(one per server) and acts on its answers:

* a head over ``max_header_bytes`` or ``max_headers``: ``431`` with the JSON
  error body (``headers_too_large``), then closed; the parser is never given
  more than ``max_header_bytes`` of a head, so an endless line costs at most
  that much memory;
* a head not complete ``header_timeout_s`` after its first byte: ``408``
  (``request_timeout``), then closed;
* no request in progress for ``keep_alive_timeout_s`` (just connected and
  silent, or idle between requests): closed;
* over ``max_per_address`` connections from the peer's address, or over the
  server's capacity with no waiting connection to evict: closed at connect,
  before a byte is read.

A request being served (its body, its response, an SSE stream of any
length) and a WebSocket after the upgrade have no timer here.

:func:`server_options <icefloe.transport.app.server_options>` passes a
:class:`HttpProtocolFactory` as uvicorn's ``http=``.
"""

from __future__ import annotations

import asyncio
import http
import json
import weakref
from collections.abc import Callable
from typing import Any, Final

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_remote_addr
from uvicorn.server import ServerState

from icefloe.core.conntable import (
    ConnectionLimits,
    ConnectionTable,
    HeadRefusal,
    Phase,
)
from icefloe.core.wire_errors import ErrorCode, http_status
from icefloe.transport.forwarded import TrustedProxies

__all__ = [
    "FD_RESERVE_MIN",
    "LINGER_BYTES",
    "LINGER_S",
    "GuardedHttpProtocol",
    "HttpProtocolFactory",
    "error_bytes",
    "open_files_capacity",
]

#: after an error answer, the client's unread bytes are read and dropped for
#: this long, or up to LINGER_BYTES, before the socket closes: closing with
#: them unread would reset the connection, and a reset can destroy the
#: answer before the client reads it
LINGER_S: Final = 2.0
#: bytes dropped at most while lingering
LINGER_BYTES: Final = 4 * 1024 * 1024

#: file descriptors kept free for everything that is not a client socket
#: (the listener, the store, logs, outbound connections): at least this many,
#: and a tenth of the open-files limit
FD_RESERVE_MIN: Final = 64


def open_files_capacity() -> int | None:
    """Client connections the process can hold and still answer new ones:
    the soft open-files limit minus a reserve (``None``: no limit known)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, soft - max(FD_RESERVE_MIN, soft // 10))


class _HeadRefused(Exception):
    """Raised from a parser callback to stop the parse of a refused head."""

    def __init__(self, refusal: HeadRefusal) -> None:
        super().__init__(refusal.name)
        self.refusal = refusal


class _Guard:
    """What every connection of one server shares."""

    def __init__(self, limits: ConnectionLimits, proxies: TrustedProxies) -> None:
        self.limits = limits
        self.proxies = proxies
        self.table: ConnectionTable[GuardedHttpProtocol] = ConnectionTable(
            limits, open_files_capacity()
        )


class HttpProtocolFactory:
    """uvicorn's ``http=`` option: makes a :class:`GuardedHttpProtocol` per
    connection, with one connection table per server."""

    def __init__(self, limits: ConnectionLimits, forwarded_allow_ips: tuple[str, ...] = ()) -> None:
        self.limits = limits
        #: peers exempt from the per-address cap: a proxy speaks for many clients
        self.proxies = TrustedProxies(forwarded_allow_ips)
        self._guards: weakref.WeakKeyDictionary[ServerState, _Guard] = weakref.WeakKeyDictionary()

    def guard(self, server_state: ServerState) -> _Guard:
        guard = self._guards.get(server_state)
        if guard is None:
            guard = self._guards[server_state] = _Guard(self.limits, self.proxies)
        return guard

    def __call__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> GuardedHttpProtocol:
        return GuardedHttpProtocol(
            config, server_state, app_state, _loop, guard=self.guard(server_state)
        )


class GuardedHttpProtocol(HttpToolsProtocol):
    """One connection: uvicorn's protocol, with the table's limits applied."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        guard: _Guard,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._guard = guard
        self._table = guard.table
        self._admitted = False
        self._upgraded = False
        #: bytes still dropped after an error answer (None: not lingering)
        self._linger_left: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    # -- the connection ---------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = get_remote_addr(transport)
        address = peer[0] if peer is not None else ""
        # A Unix socket has no peer address; a trusted proxy speaks for many clients.
        exempt = peer is None or self._guard.proxies.trusts(address)
        admission = self._table.admit(self, address, self.loop.time(), exempt=exempt)
        if not admission.admitted:
            # Refused before a byte is read: the cheapest answer there is.
            transport.close()
            return
        if admission.evicted is not None:
            admission.evicted.evict()
        self._admitted = True
        super().connection_made(transport)
        self._rearm()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._release()
        super().connection_lost(exc)

    def evict(self) -> None:
        """Closed to make room for a new connection (it had no request in progress)."""
        self._release()
        if not self.transport.is_closing():
            self.transport.close()

    def _release(self) -> None:
        self._cancel_timer()
        self._table.release(self)

    # -- bytes in ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._linger_left is not None:
            self._linger_left -= len(data)
            if self._linger_left <= 0:
                self.transport.close()
            return
        if self not in self._table:
            return
        self._unset_keepalive_if_required()
        while data and not self._upgraded and not self.transport.is_closing():
            room = self._table.head_room(self)
            # A head is awaited: give the parser no more than its room, so an
            # endless header line is refused at the limit instead of growing.
            piece, data = (data, b"") if room is None else (data[:room], data[room:])
            if not self._feed(piece):
                break
            if room is not None:
                refusal = self._table.head_bytes(self, len(piece), self.loop.time())
                if refusal is not None:
                    self._refuse_head(refusal)
                    break
        self._rearm()

    def _feed(self, data: bytes) -> bool:
        """Parse ``data``; ``False`` when the rest of the read is not for this
        parser: the head is refused, the request is malformed, or an upgrade
        (as uvicorn, which drops what follows an upgrade request in its read)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # A callback's exception reaches here wrapped, as its context.
            if isinstance(exc.__context__, _HeadRefused):
                self._refuse_head(exc.__context__.refusal)
                return False
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return True

    # -- parser callbacks -------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        refusal = self._table.header_field(self)
        if refusal is not None:
            raise _HeadRefused(refusal)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._table.head_complete(self)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        answered = self.cycle is not None and self.cycle.response_complete
        self._table.request_complete(self, self.loop.time(), answered=answered)
        self._rearm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self not in self._table:
            return
        # A pipelined request may have started in super(): it is still served.
        if self.cycle is None or self.cycle.response_complete:
            self._table.response_complete(self, self.loop.time())
            self._rearm()

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        self._upgraded = True
        self._table.upgraded(self)
        self._cancel_timer()
        # The WebSocket protocol now gets the socket's events; wrap it so the
        # connection still leaves the table when it closes.
        inner = self.transport.get_protocol()
        self.transport.set_protocol(_Upgraded(inner, self._release))

    # -- timers -----------------------------------------------------------------

    def _rearm(self) -> None:
        if self._linger_left is not None:
            return
        deadline = self._table.deadline(self) if self in self._table else None
        if deadline == self._timer_at:
            return
        self._cancel_timer()
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self not in self._table or self.transport.is_closing():
            return
        expired = self._table.expired(self, self.loop.time())
        if expired is Phase.HEAD:
            seconds = self._guard.limits.header_timeout_s
            self._answer_and_close(
                ErrorCode.REQUEST_TIMEOUT,
                f"the request line and headers did not arrive within {seconds:g} s",
            )
        elif expired is Phase.WAITING:
            self.transport.close()
        else:
            self._rearm()

    # -- refusals ---------------------------------------------------------------

    def _refuse_head(self, refusal: HeadRefusal) -> None:
        limits = self._guard.limits
        if refusal is HeadRefusal.TOO_MANY_FIELDS:
            message = f"more than {limits.max_headers} header fields"
        else:
            message = f"the request line and headers are over {limits.max_header_bytes} bytes"
        self._answer_and_close(ErrorCode.HEADERS_TOO_LARGE, message)

    def _answer_and_close(self, code: ErrorCode, message: str) -> None:
        self._cancel_timer()
        # Mid-response (a pipelined head) an error response would corrupt the
        # one being sent: then the connection is only closed.
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()
            return
        self.transport.write(error_bytes(code, message, self.server_state.default_headers))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # Half-close, and drop what the client is still sending (see LINGER_S);
        # the connection stays counted until it closes.
        self.transport.write_eof()
        self._linger_left = LINGER_BYTES
        self._timer = self.loop.call_later(LINGER_S, self.transport.close)


def error_bytes(code: ErrorCode, message: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole ``Connection: close`` response with the JSON error body."""
    status = http_status(code)
    body = json.dumps({"error": {"code": code.value, "message": message}}).encode()
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    lines.append(b"content-type: application/json\r\n")
    lines.append(b"content-length: %d\r\n" % len(body))
    lines.append(b"connection: close\r\n\r\n")
    return b"".join(lines) + body


class _Upgraded(asyncio.Protocol):
    """The WebSocket protocol of an upgraded connection, which tells the
    table when the socket closes."""

    def __init__(self, inner: asyncio.BaseProtocol, on_lost: Callable[[], None]) -> None:
        self._inner = inner
        self._on_lost = on_lost

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # type: ignore[attr-defined,no-any-return]

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()
        self._inner.connection_lost(exc)
