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

__all__ = ["choose_subprotocol", "deny", "origin_denial"]


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


def origin_denial(conn: HTTPConnection, allowed: tuple[str, ...]) -> HttpError | None:
    """Refuse cross-site WebSocket hijacking: a browser's Origin must be allowed.

    Browsers always send ``Origin`` on a WebSocket; other clients need not.
    Allowed: an origin in ``allowed`` (or ``*``), else (with none configured)
    the server's own origin: the same host and port as the ``Host`` header.
    """
    origin = conn.headers.get("origin")
    if origin is None or "*" in allowed or origin in allowed:
        return None
    host = conn.headers.get("host", "")
    if not allowed and origin.split("://", 1)[-1] == host:
        return None
    return HttpError(ErrorCode.FORBIDDEN, "origin not allowed")


async def deny(scope: Any, send: Any, denial: HttpError) -> None:
    """Refuse a handshake with the API's JSON error when the server can, else close
    (1008, which the server's WebSocket layer turns into an HTTP 403 before the upgrade)."""
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
