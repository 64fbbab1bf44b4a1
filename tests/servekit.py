"""A real uvicorn server for the tests: any ASGI app on 127.0.0.1:<free port>,
or ``icefloe serve`` in a process of its own.

A plain module (not a conftest), so that test modules can import it by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

import icefloe
from ports import free_port

__all__ = ["serve_asgi", "serve_command"]

#: the source tree the tests import icefloe from, for a server process
SRC = Path(icefloe.__file__).parents[1]


@asynccontextmanager
async def serve_asgi(app: Any, **config: Any) -> AsyncIterator[str]:
    """Serve any ASGI app on 127.0.0.1:<free port> with its lifespan on; yields the URL."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only
    # when the listener says it is TCP, and without it small writes wait ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2, **config
        )
    )
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(10):
                await task
        finally:
            sock.close()


@asynccontextmanager
async def serve_command(
    target: str, *flags: str, open_files: int | None = None, cwd: Path | None = None
) -> AsyncIterator[str]:
    """``icefloe serve TARGET FLAGS`` in its own process on a free loopback
    port; yields its URL once ``/healthz`` answers. A server with a loop and
    a core of its own: for tests whose clients would otherwise starve it.
    ``open_files`` sets the process's open-files limit (soft and hard);
    ``cwd`` is the directory it runs in (where a TARGET module may live)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("FORWARDED_ALLOW_IPS", None)
    code = "from icefloe.cli import main; main()"
    args = [sys.executable, "-c", code, "serve", target, "--port", str(port), *flags]

    def limit_files() -> None:  # in the child, before it runs
        import resource

        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env, stderr=asyncio.subprocess.PIPE, preexec_fn=limit_files
    )
    assert proc.stderr is not None
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client, asyncio.timeout(20):
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"icefloe serve exited: {await proc.stderr.read()!r}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.05)  # polling a starting process, not synchronisation
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
