"""The checks of a ``/v1/ws`` handshake: subprotocol, origin, and refusals.

Split from :mod:`icefloe.transport.websocket`, which re-exports
:func:`choose_subprotocol` and :func:`origin_denial`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

from icefloe.core.codec import Format
from icefloe.core.ops import SUBPROTOCOL_MSGPACK_ZSTD, SUBPROTOCOLS
from icefloe.core.wire_errors import CloseReason, ErrorCode, close_frame
from icefloe.transport.errors import HttpError
from icefloe.transport.logfilter import RefusalLog, mark_handshake_refused

__all__ = ["REFUSALS", "choose_subprotocol", "deny", "origin_denial", "page_scheme"]

#: refused handshakes, logged at INFO at most once a second with a count
#: (logger ``icefloe.ws``): a flood of them must not flood the log
REFUSALS = RefusalLog("icefloe.ws", "WebSocket handshakes refused")

#: the page scheme each WebSocket scheme is same-origin with
_PAGE_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def choose_subprotocol(
    offered: list[str], *, zstd: bool = False
) -> tuple[str | None, Format, bool] | None:
    """The subprotocol to accept, its format and whether it is zstd-compressed;
    None if only unknown ones were offered.

    A client that offers none gets JSON (handy for ``websocat`` and tests).
    ``icefloe.v1.msgpack+zstd`` is accepted only with ``zstd`` (the setting is
    on and the zstandard package is installed); a client offering it should
    offer plain ``icefloe.v1.msgpack`` after it, which such a server picks.
    """
    if not offered:
        return None, Format.JSON, False
    for name in offered:
        fmt = SUBPROTOCOLS.get(name)
        if fmt is not None:
            return name, fmt, False
        if zstd and name == SUBPROTOCOL_MSGPACK_ZSTD:
            return name, Format.MSGPACK, True
    return None


def page_scheme(conn: HTTPConnection, *, forwarded_proto: str | None = None) -> str:
    """The scheme of a page same-origin with this handshake: ``http`` for
    ``ws``, ``https`` for ``wss``; ``forwarded_proto`` (what a trusted proxy
    says the client used, e.g. ``X-Forwarded-Proto``) wins when it is one of
    those four."""
    if forwarded_proto is not None:
        scheme = _PAGE_SCHEMES.get(forwarded_proto.strip().lower())
        if scheme is not None:
            return scheme
    return _PAGE_SCHEMES.get(conn.scope.get("scheme", "ws"), "http")


def origin_denial(
    conn: HTTPConnection, allowed: tuple[str, ...], *, scheme: str | None = None
) -> HttpError | None:
    """Refuse cross-site WebSocket hijacking: a browser's Origin must be allowed.

    Browsers always send ``Origin`` on a WebSocket; other clients need not.
    Allowed: an origin in ``allowed`` (or ``*``), else (with none configured)
    the server's own origin: ``scheme`` (default :func:`page_scheme`), host
    and port as the ``Host`` header. The ``Host`` header alone proves nothing
    (DNS rebinding sets it to the attacker's name): the edge checks it
    against ``EdgeSettings.allowed_hosts`` before this.
    """
    origin = conn.headers.get("origin")
    if origin is None or "*" in allowed or origin in allowed:
        return None
    host = conn.headers.get("host", "")
    own = f"{scheme or page_scheme(conn)}://{host}"
    if not allowed and host and origin.lower() == own.lower():
        return None
    return HttpError(ErrorCode.FORBIDDEN, "origin not allowed")


async def deny(scope: Any, send: Any, denial: HttpError) -> None:
    """Refuse a handshake with the API's JSON error when the server can, else close
    (1008, which the server's WebSocket layer turns into an HTTP 403 before the upgrade).

    The refusal is counted in :data:`REFUSALS` (one INFO line a second at
    most), and marked so that uvicorn's ERROR "returned without completing
    handshake" is dropped: its websockets-sansio layer sends the JSON
    response but never counts it as completing the handshake.
    """
    REFUSALS.refused(f"{denial.status} {denial.message}")
    mark_handshake_refused()
    if "websocket.http.response" in scope.get("extensions", {}):
        response = denial.response()
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
        await send(
            {"type": "websocket.http.response.start", "status": denial.status, "headers": headers}
        )
        await send({"type": "websocket.http.response.body", "body": response.body})
    else:
        code, reason = close_frame(CloseReason.HANDSHAKE_REFUSED)
        await send({"type": "websocket.close", "code": code, "reason": reason})
