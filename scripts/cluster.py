"""``make cluster``: three gateways and two workers on this machine's Redis.

Starts ``icefloe serve`` gateways sharing one backplane and store, workers
(``icefloe worker``) when this install has that command, and a round-robin
TCP proxy in front of the gateways, then prints every address and pid so
that failover can be tried by hand::

    curl -s http://127.0.0.1:8800/v1/cluster          # who is alive
    kill -TERM <gateway pid>                          # drains: clients move on
    kill -9 <gateway pid>                             # a crash

Ctrl-C (or SIGTERM) stops everything: the gateways drain, then exit.

    python scripts/cluster.py [--redis URL] [--gateways 3] [--workers 2]
                              [--port 8801] [--proxy-port 8800] [--flow M:F]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import subprocess
import sys
from dataclasses import dataclass

#: the flow every process serves unless --flow says otherwise
DEMO_FLOW = "icefloe.demo:build_demo_flow"
#: the key prefix of this recipe's backplane and store (apart from the tests')
PREFIX = "icefloe:cluster:"
#: seconds the processes get to drain and exit on Ctrl-C
STOP_S = 30.0
CLI = [sys.executable, "-c", "from icefloe.cli import main; main()"]


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    url: str | None


def _with_prefix(url: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={PREFIX}"


def _has_worker_command() -> bool:
    done = subprocess.run([*CLI, "worker", "--help"], capture_output=True, check=False)
    return done.returncode == 0


async def _check_redis(url: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.ping()
    except Exception as exc:
        sys.exit(f"make cluster: no Redis at {url} ({exc}); start one or pass --redis URL")
    finally:
        await client.aclose()


async def _healthy(url: str, proc: asyncio.subprocess.Process) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url) as client, asyncio.timeout(60):
        while proc.returncode is None:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)  # a starting process: poll its probe
    raise SystemExit(f"make cluster: {url} exited with {proc.returncode}")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def _proxy(port: int, backends: list[int]) -> asyncio.Server:
    """Each new connection to the next gateway that accepts it (round robin)."""
    turn = itertools.cycle(range(len(backends)))

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        start = next(turn)
        for i in range(len(backends)):
            backend = backends[(start + i) % len(backends)]
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend)
            except OSError:
                continue  # stopped or killed: the next one
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            return
        writer.close()

    return await asyncio.start_server(accept, "127.0.0.1", port)


async def main(args: argparse.Namespace) -> None:
    await _check_redis(args.redis)
    backplane = _with_prefix(args.redis)
    children: list[Child] = []
    ports = [args.port + i for i in range(args.gateways)]
    for i, port in enumerate(ports):
        argv = [*CLI, "serve", args.flow, "--port", str(port), "--backplane", backplane]
        argv += ["--store", backplane, "--drain-timeout", str(args.drain_timeout)]
        proc = await asyncio.create_subprocess_exec(*argv)
        children.append(Child(f"gateway {i + 1}", proc, f"http://127.0.0.1:{port}"))
    if args.workers and _has_worker_command():
        for i in range(args.workers):
            argv = [*CLI, "worker", args.flow, "--backplane", backplane, "--store", backplane]
            proc = await asyncio.create_subprocess_exec(*argv)
            children.append(Child(f"worker {i + 1}", proc, None))
    elif args.workers:
        print("workers skipped: this install has no `icefloe worker` command")
    await asyncio.gather(*(_healthy(c.url, c.proc) for c in children if c.url is not None))
    proxy = await _proxy(args.proxy_port, ports) if args.proxy_port else None

    print()
    for child in children:
        print(f"  {child.name:<10} pid {child.proc.pid:<8} {child.url or ''}")
    if proxy is not None:
        print(f"  {'proxy':<10} {'':<12} http://127.0.0.1:{args.proxy_port} (round robin)")
    entry = f"http://127.0.0.1:{args.proxy_port or ports[0]}"
    print(f"\n  who is alive:   curl -s {entry}/v1/cluster")
    print(f"  a demo stream:  open {entry}/ (the inspector)")
    print("  drain one:      kill -TERM <pid>    crash one: kill -9 <pid>")
    print("  Ctrl-C stops them all.\n")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchers = {asyncio.ensure_future(c.proc.wait()): c for c in children}
    stopping = asyncio.ensure_future(stop.wait())
    pending = set(watchers)
    while not stop.is_set() and pending:
        done, pending = await asyncio.wait({stopping, *pending}, return_when="FIRST_COMPLETED")
        for task in done - {stopping}:
            child = watchers[task]
            print(f"{child.name} (pid {child.proc.pid}) exited with {child.proc.returncode}")
    if proxy is not None:
        proxy.close()
    print("stopping: the gateways drain, then exit")
    for child in children:
        if child.proc.returncode is None:
            child.proc.send_signal(signal.SIGTERM)
    for child in children:
        try:
            await asyncio.wait_for(child.proc.wait(), STOP_S)
        except TimeoutError:
            child.proc.kill()
            await child.proc.wait()


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="backplane and store")
    parser.add_argument("--gateways", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8801, help="the first gateway's port")
    parser.add_argument("--proxy-port", type=int, default=8800, help="0: no proxy")
    parser.add_argument("--flow", default=DEMO_FLOW, help="module:attribute of the flow")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(_args()))
