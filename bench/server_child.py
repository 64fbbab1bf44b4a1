"""A bench server child: one server in an interpreter of its own, driven over stdin.

``bench/edge.py`` (HTTP) and ``bench/ws.py`` (WebSocket) each run their
servers this way, icefloe and floor alike. The child (that file run as
``python -P bench/FILE.py KIND SHAPE [options]``) binds 127.0.0.1:0, prints
``ready PORT DESCRIPTION``, then obeys one command per stdin line, answering
``ok``, until ``quit`` or EOF (:func:`serve_child`). The benchmark's side starts it
with :func:`spawned` and drives it through :class:`ServerProcess`.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil
import uvicorn

from icefloe import Context, Message

__all__ = [
    "CHILD_LIFETIME_S",
    "COMMAND_TIMEOUT_S",
    "GRACE_S",
    "LOOPBACK",
    "STARTUP_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "TEXT",
    "ChildServer",
    "Command",
    "CpuSpent",
    "ServerProcess",
    "UvicornChild",
    "close_listener",
    "cpu_spent",
    "emit_gated",
    "emit_one",
    "loop_factory",
    "serve_child",
    "spawned",
]

LOOPBACK = "127.0.0.1"
#: the text of every chunk the icefloe servers emit
TEXT = "tok"
#: seconds: a child starting up / answering one command / stopping
STARTUP_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
#: seconds a server child lives at most, whatever its parent does
CHILD_LIFETIME_S = 900.0
#: seconds uvicorn waits for open connections when it stops
GRACE_S = 2.0

#: a command's handler: its arguments (the words after its name); may be async
Command = Callable[[Sequence[str]], object]


# -- the server child -----------------------------------------------------------------


class ChildServer(Protocol):
    """What :func:`serve_child` runs: a server with a gate that ``go`` opens."""

    @property
    def description(self) -> str: ...
    @property
    def gate(self) -> asyncio.Event: ...
    async def start(self, sock: socket.socket) -> None: ...
    async def stop(self) -> None: ...


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _obey(server: ChildServer, commands: Mapping[str, Command]) -> None:
    """Obey one command per stdin line, answering ``ok``; stop at ``quit`` or EOF.

    ``commands`` are the server's own; ``go`` (open the gate) and ``gc`` are
    every server's.
    """
    loop = asyncio.get_running_loop()
    lines = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(lines), sys.stdin)
    while True:
        word, *args = (await lines.readline()).decode().split() or [""]
        if word in ("", "quit"):
            return
        if word == "go":
            server.gate.set()
        elif word == "gc":
            gc.collect()
        elif word in commands:
            done = commands[word](args)
            if inspect.isawaitable(done):
                await done
        else:
            raise ValueError(f"unknown command {word!r}")
        _say("ok")


async def serve_child(server: ChildServer, commands: Mapping[str, Command]) -> None:
    """Serve on 127.0.0.1:<free port>, say ``ready``, obey the commands, stop."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose
    # proto says TCP, as when uvicorn binds host:port itself. With proto 0 (the
    # usual pre-bound socket) a response's second small write waits ~40 ms for
    # the delayed ACK of its first (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, 0))
        await server.start(sock)
        try:
            _say(f"ready {sock.getsockname()[1]} {server.description}")
            async with asyncio.timeout(CHILD_LIFETIME_S):
                await _obey(server, commands)
        finally:
            await server.stop()
    finally:
        sock.close()


def loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop]:
    if use_uvloop:
        import uvloop  # optional dependency: only imported when asked for

        return uvloop.new_event_loop
    return asyncio.new_event_loop


class UvicornChild:
    """An ASGI app under uvicorn on the child's socket (the icefloe variants).

    ``protocol`` names the uvicorn config attribute whose class the
    description shows (``http_protocol_class`` or ``ws_protocol_class``).
    """

    def __init__(self, app: Any, protocol: str, **options: Any) -> None:
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=GRACE_S,
            access_log=False,  # below log_level anyway; stdout carries the control replies
            **options,
        )
        self.server = uvicorn.Server(config)
        self._protocol = protocol
        self._task: asyncio.Future[None] | None = None

    @property
    def description(self) -> str:
        protocol = getattr(self.server.config, self._protocol, None)
        return f"uvicorn {uvicorn.__version__} ({getattr(protocol, '__name__', protocol)})"

    async def start(self, sock: socket.socket) -> None:
        self._task = task = asyncio.ensure_future(self.server.serve(sockets=[sock]))
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            while not self.server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped while starting")
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self._task


class Listener(Protocol):
    """A floor's server: ``asyncio.Server`` or a ``websockets`` one."""

    def close(self) -> None: ...
    async def wait_closed(self) -> None: ...


async def close_listener(listener: Listener | None) -> None:
    """Close ``listener`` (if it started) and wait, bounded, until it has closed."""
    if listener is not None:
        listener.close()
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await listener.wait_closed()


async def emit_gated(gate: asyncio.Event, msg: Message, ctx: Context) -> None:
    """A node body: wait for ``gate``, then emit ``msg.payload`` chunks and the done one."""
    chunks = int(msg.payload)
    await gate.wait()
    emit = ctx.emit_chunk
    for _ in range(chunks):
        await emit(parent=msg, text=TEXT)
    await emit(parent=msg, text="", done=True)


async def emit_one(msg: Message, ctx: Context) -> None:
    """A node body: one chunk and the done one, at once."""
    await ctx.emit_chunk(parent=msg, text=TEXT)
    await ctx.emit_chunk(parent=msg, text="", done=True)


# -- the benchmark's side ---------------------------------------------------------------


class ServerProcess:
    """A server child, driven by one-line commands on its stdin."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, description: str) -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        self._proc = proc
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        self._ps = psutil.Process(proc.pid)
        self.port = port
        self.description = description

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def send(self, command: str) -> None:
        """Write ``command`` without waiting for its answer (see :meth:`answer`)."""
        self._stdin.write(command.encode() + b"\n")

    async def answer(self) -> None:
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            line = await self._stdout.readline()
        if line != b"ok\n":
            raise RuntimeError(f"{self.description} server answered {line!r}")

    async def command(self, command: str) -> None:
        self.send(command)
        await self.answer()

    def cpu_seconds(self) -> float:
        times = self._ps.cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        return int(self._ps.memory_info().rss)

    async def close(self) -> int:
        """Ask the child to quit (kill it if it does not); its exit status."""
        proc = self._proc
        if proc.returncode is None:
            try:
                self.send("quit")
                self._stdin.close()
            except (ConnectionError, RuntimeError):
                pass
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        return proc.returncode if proc.returncode is not None else -1


@dataclass(slots=True)
class CpuSpent:
    """CPU seconds a measured region cost: the server child's and this process's."""

    server: float = 0.0
    client: float = 0.0

    def shares(self, elapsed: float) -> dict[str, float]:
        """CPU seconds per elapsed second on each side: which side was busy."""
        return {
            "server_cpu_share": self.server / elapsed,
            "client_cpu_share": self.client / elapsed,
        }

    def ms_per(self, iterations: int) -> dict[str, float]:
        """CPU milliseconds per iteration on each side."""
        return {
            "server_cpu_ms": 1e3 * self.server / iterations,
            "client_cpu_ms": 1e3 * self.client / iterations,
        }


@contextmanager
def cpu_spent(server: ServerProcess) -> Iterator[CpuSpent]:
    """Collect this process's garbage, then measure both sides' CPU over the block.

    The figures are filled in when the block ends (psutil reads 10 ms ticks).
    """
    gc.collect()
    spent = CpuSpent()
    server_start = server.cpu_seconds()
    client_start = time.process_time()
    yield spent
    spent.client = time.process_time() - client_start
    spent.server = server.cpu_seconds() - server_start


@asynccontextmanager
async def spawned(
    script: Path, kind: str, shape: str, *options: str, uvloop: bool
) -> AsyncIterator[ServerProcess]:
    """``script`` run as a server child serving ``shape`` as ``kind``, stopped on exit.

    ``options`` follow ``KIND SHAPE`` on its command line (then ``--uvloop``).
    """
    argv = [sys.executable, "-P", str(script), kind, shape, *options]
    if uvloop:
        argv.append("--uvloop")
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            line = (await proc.stdout.readline()).decode()
        word, _, rest = line.rstrip("\n").partition(" ")
        port, _, description = rest.partition(" ")
        if word != "ready":
            raise RuntimeError(f"{kind} {shape} server did not start: {line!r}")
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    server = ServerProcess(proc, int(port), description)
    try:
        yield server
    finally:
        status = await server.close()
    if status != 0:
        raise RuntimeError(f"{kind} {shape} server exited with status {status}")
