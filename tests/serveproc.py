"""``icefloe serve`` in a process of its own that a test may SIGKILL and start
again on the same port, its output kept in a log file so that a server that
exits at start-up says why in the test's failure (a pipe nobody reads would
stall a talkative server; /dev/null would hide the reason)."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

import icefloe

EXAMPLES = Path(__file__).parents[1] / "examples"
_logs: Path | None = None


def _log_dir() -> Path:
    global _logs
    if _logs is None:
        _logs = Path(tempfile.mkdtemp(prefix="icefloe-serve-"))
        atexit.register(shutil.rmtree, _logs, True)
    return _logs


def log_path(port: int) -> Path:
    """A fresh file for the output of a server on ``port`` (removed at exit)."""
    return Path(tempfile.mkstemp(prefix=f"{port}-", suffix=".log", dir=_log_dir())[1])


def tail(log: Path, lines: int = 40) -> str:
    """The last lines written to ``log``."""
    try:
        text = log.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


class ServeProcess(subprocess.Popen[bytes]):
    """One ``icefloe serve TARGET --port PORT --store STORE`` process."""

    def __init__(self, port: int, store: str, target: str, *flags: str) -> None:
        env = dict(os.environ)
        # The sources this test runs against (PYTHONPATH=... pytest), not a fixed tree.
        env["PYTHONPATH"] = os.pathsep.join([str(Path(icefloe.__file__).parents[1]), str(EXAMPLES)])
        code = "import sys; from icefloe.cli import main; sys.argv[0] = 'icefloe'; main()"
        argv = ["serve", target, "--port", str(port), "--store", store, *flags]
        self.log = log_path(port)
        with self.log.open("ab") as out:
            super().__init__(
                [sys.executable, "-c", code, *argv],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

    def tail(self, lines: int = 40) -> str:
        """The last lines the process wrote."""
        return tail(self.log, lines)


async def ready(client: httpx.AsyncClient, proc: ServeProcess) -> None:
    """Wait until the server answers ``/healthz``; fail with its output if it exits."""
    async with asyncio.timeout(30):
        while True:
            code = proc.poll()
            if code is not None:
                raise AssertionError(f"the server exited with {code}:\n{proc.tail()}")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)  # polling a starting process, not synchronisation
