"""The one table of wire error codes: every code, its HTTP status, its WebSocket close.

Every error a peer can see carries one :class:`ErrorCode`: an HTTP error body
``{"error": {"code", "message"}}``, an SSE ``event: error`` terminal, a
WebSocket ``error`` op, a long-poll terminal. This module is where each code
gets its meaning, its HTTP status and what it does to a WebSocket connection;
raise sites name a member, never a string, and never choose a status of their
own (a test walks :data:`WIRE_ERRORS` against docs/wire-protocol.md and
docs/websocket.md).

A code is one of three kinds:

* a **request error** (``bad_request``, ``not_found``...): the request or op is
  refused; over HTTP it is the response status, over WebSocket an ``error``
  op and the connection stays open;
* a **stream terminal** (``cancelled``, ``failed``...): a stream ended without
  its ``done`` chunk; it travels in a terminal event, so its status is only
  used where a request is refused because of it (``history_gone`` → 410);
* a **connection end** (:class:`CloseReason`): what makes the server close a
  WebSocket, mapped to a close code and a short, detail-free reason in
  :func:`close_frame`.

Pure: no I/O, no framework; the transport turns these into responses.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, NamedTuple

__all__ = [
    "WIRE_ERRORS",
    "CloseCode",
    "CloseReason",
    "ErrorCode",
    "WireError",
    "close_frame",
    "http_status",
]


class ErrorCode(enum.StrEnum):
    """Every code that travels on the wire; the strings are the contract."""

    # -- request errors --------------------------------------------------------
    #: malformed body or op, unknown op, wrong field type, value out of range
    BAD_REQUEST = "bad_request"
    #: missing or invalid credentials
    UNAUTHORIZED = "unauthorized"
    #: the principal lacks the scope, or the resource is another tenant's
    FORBIDDEN = "forbidden"
    #: no such stream, topic, route or session (or hidden: existence must not leak)
    NOT_FOUND = "not_found"
    #: the route exists but not for this HTTP method
    METHOD_NOT_ALLOWED = "method_not_allowed"
    #: valid, but clashes with the current state (already following, id in use)
    CONFLICT = "conflict"
    #: an op that needs a live stream (``input``) on a stream that has ended
    STREAM_CLOSED = "stream_closed"
    #: a body or message over its size limit
    TOO_LARGE = "too_large"
    #: the principal's request rate is exceeded; ``Retry-After`` says when to retry
    RATE_LIMITED = "rate_limited"
    #: a valid op this server does not offer, e.g. ``publish`` without a hub
    UNSUPPORTED = "unsupported"
    #: ``hello`` resume of an unknown, expired or foreign session; a fresh one follows
    SESSION_EXPIRED = "session_expired"
    #: a dependency (the hub, the store) cannot take the request now
    UNAVAILABLE = "unavailable"
    #: a bug on the server; the message never carries details
    INTERNAL = "internal"
    # -- connection limits before authentication (issue 15, items 4-5) --
    #: a request line and headers over the server's size or field-count limit
    HEADERS_TOO_LARGE = "headers_too_large"
    #: a request head that did not arrive within the header timeout
    REQUEST_TIMEOUT = "request_timeout"
    # -- end of connection limits --
    # -- admission and stream terminals ------------------------------------------
    #: admission refused, or a stream shed: a server-wide concurrency or memory limit
    OVERLOADED = "overloaded"
    #: admission refused, or a stream ended: the tenant's or connection's own budget is used up
    LIMIT_EXCEEDED = "limit_exceeded"
    #: a resume point that retained history no longer covers
    HISTORY_GONE = "history_gone"
    #: a consumer, an operator or ``flow.cancel`` stopped the stream
    CANCELLED = "cancelled"
    #: the producing node raised (after its retries) or the producer aborted
    FAILED = "failed"
    #: ``Message.deadline_s`` passed before the stream finished
    TIMEOUT = "timeout"
    #: the run died with its process and could not be resumed
    INTERRUPTED = "interrupted"
    #: a stored record failed its checksum; it is never delivered
    CORRUPT = "corrupt"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server sends (RFC 6455 section 7.4, plus 4000 and 4001)."""

    NORMAL = 1000
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    #: sent by the WebSocket layer (uvicorn) to every open connection at shutdown
    SERVICE_RESTART = 1012
    #: private range: the session was taken over by another connection
    SESSION_TAKEN = 4000
    #: private range: this gateway drains (SIGTERM); reconnect, to any
    #: gateway, at once and resume the session (issue 12, lifecycle)
    RECONNECT = 4001


class WireError(NamedTuple):
    """What one :class:`ErrorCode` means on each transport."""

    #: the HTTP status of a response refused with this code (terminals: when a
    #: request is refused because of one, e.g. a resume into ``history_gone``)
    status: int
    #: the WebSocket close code when this code ends a connection; ``None``: it
    #: is an ``error`` op (or a stream terminal) and the connection stays open
    ws_close: CloseCode | None


#: Every code's HTTP status and WebSocket close; the single source for both.
WIRE_ERRORS: Final[Mapping[ErrorCode, WireError]] = MappingProxyType(
    {
        ErrorCode.BAD_REQUEST: WireError(400, None),
        ErrorCode.UNAUTHORIZED: WireError(401, CloseCode.POLICY_VIOLATION),
        ErrorCode.FORBIDDEN: WireError(403, None),
        ErrorCode.NOT_FOUND: WireError(404, None),
        ErrorCode.METHOD_NOT_ALLOWED: WireError(405, None),
        ErrorCode.CONFLICT: WireError(409, None),
        ErrorCode.STREAM_CLOSED: WireError(409, None),
        ErrorCode.TOO_LARGE: WireError(413, CloseCode.MESSAGE_TOO_BIG),
        ErrorCode.RATE_LIMITED: WireError(429, None),
        ErrorCode.UNSUPPORTED: WireError(501, None),
        ErrorCode.SESSION_EXPIRED: WireError(404, None),
        ErrorCode.UNAVAILABLE: WireError(503, None),
        ErrorCode.INTERNAL: WireError(500, CloseCode.INTERNAL_ERROR),
        ErrorCode.HEADERS_TOO_LARGE: WireError(431, None),  # connection limits (issue 15)
        ErrorCode.REQUEST_TIMEOUT: WireError(408, None),  # connection limits (issue 15)
        ErrorCode.OVERLOADED: WireError(503, None),
        ErrorCode.LIMIT_EXCEEDED: WireError(429, None),
        ErrorCode.HISTORY_GONE: WireError(410, None),
        ErrorCode.CANCELLED: WireError(410, None),
        ErrorCode.FAILED: WireError(500, None),
        ErrorCode.TIMEOUT: WireError(504, None),
        ErrorCode.INTERRUPTED: WireError(503, None),
        ErrorCode.CORRUPT: WireError(500, None),
    }
)


def http_status(code: ErrorCode) -> int:
    """The HTTP status of a response refused with ``code``."""
    return WIRE_ERRORS[code].status


class CloseReason(enum.Enum):
    """Why the server closes a WebSocket; :func:`close_frame` maps each to the wire."""

    #: the handshake was refused (bad credentials, origin, subprotocol, limit)
    HANDSHAKE_REFUSED = enum.auto()
    #: a flood of malformed messages
    BAD_MESSAGE_FLOOD = enum.auto()
    #: one send did not finish within the send timeout: the client stopped reading
    SLOW_CONSUMER = enum.auto()
    #: a message over the frame limit, or one that inflates past it
    TOO_BIG = enum.auto()
    #: another connection resumed this connection's session
    SESSION_TAKEN = enum.auto()
    #: a server bug; nothing of it reaches the peer
    INTERNAL = enum.auto()
    #: the gateway drains (SIGTERM): reconnect elsewhere and resume (issue 12)
    DRAINING = enum.auto()


_CLOSES: Final[Mapping[CloseReason, tuple[CloseCode, str]]] = MappingProxyType(
    {
        CloseReason.HANDSHAKE_REFUSED: (CloseCode.POLICY_VIOLATION, "handshake refused"),
        CloseReason.BAD_MESSAGE_FLOOD: (CloseCode.POLICY_VIOLATION, "too many malformed messages"),
        CloseReason.SLOW_CONSUMER: (CloseCode.POLICY_VIOLATION, "slow consumer"),
        CloseReason.TOO_BIG: (CloseCode.MESSAGE_TOO_BIG, "message too big"),
        CloseReason.SESSION_TAKEN: (CloseCode.SESSION_TAKEN, "session resumed elsewhere"),
        CloseReason.INTERNAL: (CloseCode.INTERNAL_ERROR, "internal error"),
        CloseReason.DRAINING: (CloseCode.RECONNECT, "draining: reconnect and resume"),
    }
)


def close_frame(reason: CloseReason) -> tuple[int, str]:
    """The close code and reason text sent for ``reason``.

    The text is fixed per reason: internal details never reach the peer.
    """
    code, text = _CLOSES[reason]
    return int(code), text
