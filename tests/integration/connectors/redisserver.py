"""A private ``redis-server`` for the tests that restart their broker.

The machine's Redis is shared, so a test that kills its broker starts its
own: :class:`RedisServer` runs ``redis-server`` on a free loopback port with a
data directory of its own. The append-only file is on and fsynced on every
write (``appendfsync always``): Redis then writes a command to the file
before it replies, so every entry a client saw acknowledged (an ``XADD``, a
consumer group's delivery or ``XACK``) survives a ``SIGKILL``. A restart
without persistence would come back with no stream and no group, which
tests an empty broker, not a restart that must lose no chunk.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ports import free_port

__all__ = ["RedisServer", "redis_server_binary"]

#: how long a started server may take to accept connections
READY_TIMEOUT_S = 10.0


def redis_server_binary() -> Path | None:
    """The ``redis-server`` binary on ``PATH``, ``None`` if it is not installed."""
    found = shutil.which("redis-server")
    return Path(found) if found else None


class RedisServer:
    """One ``redis-server`` subprocess on ``127.0.0.1:port``, AOF in ``directory``."""

    def __init__(self, binary: Path, directory: Path, *, persistent: bool = True) -> None:
        self.binary = binary
        self.directory = directory
        #: ``False``: no AOF, so a restart comes back empty (no stream, no group)
        self.persistent = persistent
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> float:
        """Start (on the same port and directory as before); seconds until it accepts."""
        began = time.monotonic()
        self._process = subprocess.Popen(
            [
                str(self.binary),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()
        return time.monotonic() - began

    def stop(self, *, graceful: bool = False) -> None:
        """``SIGKILL`` (a crash) or ``SIGTERM`` (Redis's own shutdown, as ``SHUTDOWN``).

        Reaps the process. Idempotent.
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        process.wait(timeout=READY_TIMEOUT_S)

    def _wait_ready(self) -> None:
        # Redis listens before it has loaded the AOF (it answers LOADING
        # meanwhile), so readiness is a PING answered with PONG
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            process = self._process
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            if self._pong():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on {self.port}")
            time.sleep(0.01)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
