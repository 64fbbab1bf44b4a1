"""Shared by the integration and browser tests: a real uvicorn server.

``serve(flow, settings=None)`` is an async context manager serving the flow
on 127.0.0.1:<free port> in the test's own loop and yielding the base URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from icefloe.runtime.flow import Flow
from icefloe.transport.app import EdgeSettings, create_app, server_options
from servekit import serve_asgi

Serve = Callable[..., AbstractAsyncContextManager[str]]


@asynccontextmanager
async def serve_flow(flow: Flow, settings: EdgeSettings | None = None) -> AsyncIterator[str]:
    """Serve ``flow`` on 127.0.0.1:<free port>; yields the base URL."""
    settings = settings or EdgeSettings()
    async with serve_asgi(create_app(flow, settings), **server_options(settings)) as url:
        yield url


@pytest.fixture
def serve() -> Serve:
    return serve_flow
