"""Gateways for the backplane tests: ``icefloe serve --backplane`` processes
on the machine's Redis, and a round-robin TCP proxy in front of them.

A plain module (not a conftest), so that test modules import it by name.
Redis: ``ICEFLOE_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``);
each test gets a key prefix of its own, removed afterwards. With
``engine="nats"`` the gateways use NATS JetStream instead
(``ICEFLOE_TEST_NATS_URL``, default ``nats://127.0.0.1:4222``), under a
prefix of their own whose stream and bucket are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

import icefloe
from ports import free_port
from serveproc import log_path, tail

__all__ = [
    "NATS_URL",
    "REDIS_URL",
    "CuttableRedis",
    "Gateway",
    "cluster",
    "joined",
    "round_robin",
    "rss_bytes",
    "sse_events",
]

REDIS_URL = os.environ.get("ICEFLOE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("ICEFLOE_TEST_NATS_URL", "nats://127.0.0.1:4222")
SRC = Path(icefloe.__file__).parents[1]
HERE = Path(__file__).parent


@dataclass(frozen=True)
class Gateway:
    url: str
    pid: int
    #: the backplane prefix its cluster shares
    prefix: str = ""
    #: the process, for a test that signals it and waits for its exit status
    proc: asyncio.subprocess.Process | None = None


#: each gateway's output (by pid), shown when it exits at start-up
_LOGS: dict[int, Path] = {}


async def _start(flags: tuple[str, ...], backplane: str) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    path = os.pathsep.join([str(SRC), str(HERE), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    code = "from icefloe.cli import main; main()"
    args = [sys.executable, "-c", code, "serve", "bpflow:build", "--port", str(port)]
    args += ["--backplane", backplane, *flags]
    log = log_path(port)
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(*args, env=env, stderr=out)
    _LOGS[proc.pid] = log
    return proc, f"http://127.0.0.1:{port}"


async def _ready(proc: asyncio.subprocess.Process, url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client, asyncio.timeout(30):
        while True:
            if proc.returncode is not None:
                said = tail(_LOGS[proc.pid]) if proc.pid in _LOGS else ""
                raise RuntimeError(f"icefloe serve exited with {proc.returncode}:\n{said}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)  # polling a starting process, not synchronisation


@asynccontextmanager
async def cluster(
    count: int,
    *flags: str,
    redis_url: str = REDIS_URL,
    engine: str = "redis",
    nats_url: str = NATS_URL,
    prefix: str | None = None,
) -> AsyncIterator[list[Gateway]]:
    """``count`` gateways sharing a fresh key prefix (or ``prefix``); its keys
    are deleted after.

    ``redis_url`` (``nats_url`` with ``engine="nats"``) is where the gateways
    reach the engine (a proxy in front of it, for outage tests); the keys are
    deleted through :data:`REDIS_URL` (:data:`NATS_URL`)."""
    hexid = uuid.uuid4().hex[:10]
    if engine == "nats":
        prefix = prefix or f"icefloe_test_{hexid}"
        backplane = f"{nats_url}?prefix={prefix}"
    else:
        prefix = prefix or f"icefloe:test:{hexid}:"
        backplane = f"{redis_url}?prefix={prefix}"
    procs: list[asyncio.subprocess.Process] = []
    try:
        started = [await _start(flags, backplane) for _ in range(count)]
        procs = [proc for proc, _url in started]
        await asyncio.gather(*(_ready(proc, url) for proc, url in started))
        yield [Gateway(url, proc.pid, prefix, proc) for proc, url in started]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await (_drop_nats(prefix) if engine == "nats" else _drop_redis(prefix))


async def _drop_redis(prefix: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def _drop_nats(prefix: str) -> None:
    import nats
    from nats.js.errors import NotFoundError

    client = await nats.connect(NATS_URL)
    try:
        for name in (f"{prefix}_chunks", f"KV_{prefix}_meta"):
            with contextlib.suppress(NotFoundError):
                await client.jetstream().delete_stream(name)
    finally:
        await client.close()


@asynccontextmanager
async def joined(member: Gateway, *flags: str) -> AsyncIterator[Gateway]:
    """One more gateway on ``member``'s cluster, started now (stopped after)."""
    proc, url = await _start(flags, f"{REDIS_URL}?prefix={member.prefix}")
    try:
        await _ready(proc, url)
        yield Gateway(url, proc.pid, member.prefix)
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


class CuttableRedis:
    """A TCP proxy to Redis (or to ``host:port``, another engine) on a fixed
    port that can be cut and restored (``redis://127.0.0.1:<port>/0``: the
    gateways' engine, for outage tests)."""

    def __init__(self, host: str | None = None, port: int | None = None) -> None:
        self.port = free_port()
        redis_host, _, rest = REDIS_URL.removeprefix("redis://").partition(":")
        self._target = (host or redis_host, port or int(rest.split("/")[0]))
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def up(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


@asynccontextmanager
async def round_robin(gateways: list[Gateway]) -> AsyncIterator[str]:
    """A TCP proxy sending each new connection to the next gateway; yields its URL."""
    backends = itertools.cycle([g.url.rsplit(":", 1)[1] for g in gateways])
    tasks: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = int(next(backends))
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        for task in (
            asyncio.ensure_future(_pipe(reader, up_writer)),
            asyncio.ensure_future(_pipe(up_reader, writer)),
        ):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str | None, str, str]]:
    """(id, event, data) of each SSE event of a streaming response."""
    event_id: str | None = None
    event = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event_id, event, "\n".join(data)
            event_id, event, data = None, "message", []
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid``."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
