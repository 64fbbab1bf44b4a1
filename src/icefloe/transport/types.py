"""The ASGI types of the edge, in one place (the ASGI 3 spec's callables).

Every raw-ASGI part of the transport (streaming responses, the WebSocket
endpoint, the app itself) is typed against these aliases; they match
Starlette's, so the same callables pass to it unchanged. ``Scope`` here is
the ASGI connection scope, not :class:`icefloe.transport.auth.Scope` (a
permission); modules that need both import this one as ``AsgiScope``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, TypeAlias

__all__ = ["RAW_SEND", "ASGIApp", "Message", "Receive", "Scope", "Send"]

#: the connection scope: type, path, headers, ...
Scope: TypeAlias = MutableMapping[str, Any]
#: one event sent or received: ``{"type": "http.response.body", ...}``
Message: TypeAlias = MutableMapping[str, Any]
#: waits for the next event from the client
Receive: TypeAlias = Callable[[], Awaitable[Message]]
#: sends one event to the client
Send: TypeAlias = Callable[[Message], Awaitable[None]]
#: an ASGI application
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

#: scope key holding the server's own ``send``: streaming bodies write with it,
#: past the middlewares' wrappers (see :mod:`icefloe.transport.app`)
RAW_SEND: Final = "icefloe.send"
