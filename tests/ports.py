"""Loopback ports for the servers the tests start in processes of their own.

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range,
the range every outgoing connection of this machine also draws its local port
from. Between the probe and the server's own bind (an interpreter start and a
store's lifespan later) that number can be taken by a store pool's connection,
by another test's client, or by a client polling ``/healthz`` on that very port
(Linux may connect such a socket to itself); the server then exits at start-up
with "address already in use" (uvicorn's exit code 3). The ports here come from
below the ephemeral range, where no outgoing connection lands, each
pytest-xdist worker from a slice of its own, and none twice in one process.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

#: the lowest port handed out (well above the registered services people run)
FLOOR = 20000
_handed: set[int] = set()
_rng = random.Random(int.from_bytes(os.urandom(8), "big"))


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _slice() -> range:
    """This process's share of [FLOOR, ephemeral low)."""
    top = max(_ephemeral_low(), FLOOR + 2000)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    width = (top - FLOOR) // max(count, 1)
    start = FLOOR + width * min(index, count - 1)
    return range(start, start + width)


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range."""
    ports = _slice()
    for _ in range(500):
        port = _rng.randrange(ports.start, ports.stop)
        if port not in _handed and _bindable(port):
            _handed.add(port)
            return port
    raise RuntimeError(f"no free port in {ports.start}..{ports.stop - 1}")
