"""``icefloe worker`` processes for the worker tests (a plain module, as :mod:`cluster`).

:func:`workers` starts them on a key prefix a :func:`cluster.cluster` of
``--no-runs`` gateways shares (its keys, the store's included, are deleted
with the cluster's), each with the shared Redis store under the same prefix.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from cluster import HERE, REDIS_URL, SRC

__all__ = ["WorkerProc", "start_worker", "workers"]


@dataclass
class WorkerProc:
    proc: asyncio.subprocess.Process
    #: the worker's consumer name (its first line on stderr says it)
    id: str
    #: what it wrote on stderr since (read all along, so the pipe never fills)
    log: list[str] = field(default_factory=list)
    reading: asyncio.Task[None] | None = None

    async def read_log(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log.append(line.decode(errors="replace"))


async def start_worker(prefix: str, target: str, *flags: str) -> WorkerProc:
    """One worker on ``prefix``, once it said its id (it is then taking entries)."""
    path = os.pathsep.join([str(SRC), str(HERE), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "COLUMNS": "200"}
    args = [sys.executable, "-c", "from icefloe.cli import main; main()", "worker", target]
    args += ["--backplane", f"{REDIS_URL}?prefix={prefix}"]
    args += ["--store", f"{REDIS_URL}?prefix={prefix}store:", *flags]
    proc = await asyncio.create_subprocess_exec(*args, env=env, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    async with asyncio.timeout(30):
        line = (await proc.stderr.readline()).decode()
    assert " worker w-" in line, line
    worker = WorkerProc(proc, line.split(" worker ", 1)[1].split()[0])
    worker.reading = asyncio.ensure_future(worker.read_log())
    return worker


@asynccontextmanager
async def workers(
    prefix: str, count: int, target: str, *flags: str
) -> AsyncIterator[list[WorkerProc]]:
    """``count`` workers; those still running are stopped (SIGKILL) afterwards."""
    started: list[WorkerProc] = []
    try:
        answers = await asyncio.gather(
            *(start_worker(prefix, target, *flags) for _ in range(count)), return_exceptions=True
        )
        started = [a for a in answers if isinstance(a, WorkerProc)]
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        yield started
    finally:
        for w in started:
            if w.proc.returncode is None:
                w.proc.kill()
            await w.proc.wait()
            if w.reading is not None:
                await w.reading
            if w.log:
                print(f"worker {w.id} stderr:", *w.log[-20:], sep="\n  ")
