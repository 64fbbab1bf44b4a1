"""The real Redis and PostgreSQL servers the network store tests use.

Each test gets its own namespace (a Redis key prefix, a PostgreSQL schema)
and removes it afterwards, so tests and parallel runs never collide. A
server that cannot be reached skips the test, naming the address; any
other failure (a refused login, say) fails it.

PostgreSQL: the tests log in as the role ``icefloe_test`` to the database
``icefloe_test`` (its owner, no superuser rights); :func:`postgres_test_url`
creates both through the admin URL when they are missing, so a fresh
machine needs nothing but a running server with trust (or .pgpass) logins.

Addresses: ``ICEFLOE_TEST_REDIS_URL`` (``redis://127.0.0.1:6379/0``) and
``ICEFLOE_TEST_POSTGRES_ADMIN_URL`` (``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

REDIS_URL = os.environ.get("ICEFLOE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get(
    "ICEFLOE_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
#: the database and role the Postgres store tests use
TEST_DATABASE = "icefloe_test"
#: errors that mean "nothing answers there" (connection refused, no route, timeout)
UNREACHABLE = (OSError, asyncio.TimeoutError)


def unreachable(what: str, url: str, exc: BaseException) -> NoReturn:
    pytest.skip(
        f"{what} is unreachable at {url} ({type(exc).__name__}: {exc}); start it to run these tests"
    )


def with_database(url: str, database: str, user: str | None = None) -> str:
    """``url`` naming another database (and user)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}@{netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}", query=""))


async def postgres_test_url() -> str:
    """The URL of the test database (created, with its role, when missing)."""
    import asyncpg  # type: ignore[import-untyped]

    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    except UNREACHABLE as exc:
        unreachable("PostgreSQL", POSTGRES_ADMIN_URL, exc)
    try:
        # Two test processes may get here together: the loser's CREATE
        # fails as a duplicate, and the object exists either way.
        if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", TEST_DATABASE):
            with contextlib.suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
                await admin.execute(f"CREATE ROLE {TEST_DATABASE} LOGIN")
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", TEST_DATABASE):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                await admin.execute(f"CREATE DATABASE {TEST_DATABASE} OWNER {TEST_DATABASE}")
    finally:
        await admin.close()
    return with_database(POSTGRES_ADMIN_URL, TEST_DATABASE, user=TEST_DATABASE)


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never answers; yields the port."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class TcpProxy:
    """A local TCP proxy to a server that a test can cut and restore.

    While cut, open connections are closed and new ones are closed at once:
    an outage as the store sees it, without touching the shared server.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.cut_off = False
        self.listen_port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self._writers):
            writer.close()

    def restore(self) -> None:
        self.cut_off = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()
            self._writers.discard(dst)
