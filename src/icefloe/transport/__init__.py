"""The HTTP and WebSocket edge (starlette/uvicorn), imported only on demand.

The names for embedding the edge in your own Starlette or FastAPI app
(docs/embedding.md) are loaded on first use (PEP 562), so importing a
submodule stays as cheap as before.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from icefloe.transport.app import EdgeApp, EdgeSettings, create_app, lifespan, running
    from icefloe.transport.sse import (
        PumpSettings,
        WireFormat,
        resume_point,
        sse_response,
        stream_response,
    )

#: names loaded on first use, and the module each lives in
_LAZY = {
    "EdgeApp": "icefloe.transport.app",
    "EdgeSettings": "icefloe.transport.app",
    "create_app": "icefloe.transport.app",
    "lifespan": "icefloe.transport.app",
    "running": "icefloe.transport.app",
    "PumpSettings": "icefloe.transport.sse",
    "WireFormat": "icefloe.transport.sse",
    "resume_point": "icefloe.transport.sse",
    "sse_response": "icefloe.transport.sse",
    "stream_response": "icefloe.transport.sse",
}

__all__ = [
    "EdgeApp",
    "EdgeSettings",
    "PumpSettings",
    "WireFormat",
    "create_app",
    "lifespan",
    "resume_point",
    "running",
    "sse_response",
    "stream_response",
]


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'icefloe.transport' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value
