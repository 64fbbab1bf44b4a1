"""A gateway's drain (SIGTERM): readiness off, no new work, its clients sent elsewhere.

One :class:`Drain` per app, held by the
:class:`~icefloe.transport.edge.EdgeContext`. Every streaming response (a
:class:`~icefloe.transport.streaming.StreamPump`) and every WebSocket
connection enlists while it is open. :meth:`Drain.begin` (called by the
server on SIGTERM, :mod:`icefloe.transport.drain_server`) then:

* makes ``/readyz`` answer ``503 unavailable`` with the message ``draining``
  and ``/v1/cluster`` list the process as draining;
* refuses new runs (``POST /v1/streams``, ``POST /v1/chat``, WebSocket
  ``start``) with ``503 unavailable`` and ``Retry-After: 1``;
* with a backplane (``--backplane``: another gateway can serve the same
  streams), hands every enlisted connection off at once, and every one that
  opens afterwards as soon as it enlists: an SSE response ends with a
  ``retry:`` hint and an ``event: reconnect`` (no id), an NDJSON response
  with the line ``{"reconnect": {...}}``, a WebSocket is closed with 4001
  (:attr:`~icefloe.core.wire_errors.CloseReason.DRAINING`). Without a
  backplane there is nowhere else to read this process's runs, so its
  readers stay until the runs end (or the drain timeout), and are handed
  off then (:meth:`Drain.hand_off_all`).

The runs the process produces keep running; the server waits for them
(:meth:`Drain.busy`) within the drain timeout. Pure bookkeeping: no I/O,
no task of its own.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Final, Protocol

__all__ = [
    "DRAIN_SCOPE_KEY",
    "RECONNECT_MAX_MS",
    "RECONNECT_MIN_MS",
    "Drain",
    "HandOff",
    "reconnect_delay_ms",
]

#: the ASGI scope key under which the app puts its :class:`Drain`, for the
#: streaming responses to enlist
DRAIN_SCOPE_KEY: Final = "icefloe.drain"
#: the ``retry:`` hint a handed-off SSE reader gets is drawn from
#: [RECONNECT_MIN_MS, RECONNECT_MAX_MS): a thousand readers of a draining
#: gateway reconnect spread over a second, not at one instant
RECONNECT_MIN_MS: Final = 250
RECONNECT_MAX_MS: Final = 1250


def reconnect_delay_ms(draw: Callable[[], float] = random.random) -> int:
    """A reconnect hint in [RECONNECT_MIN_MS, RECONNECT_MAX_MS)."""
    return RECONNECT_MIN_MS + int(draw() * (RECONNECT_MAX_MS - RECONNECT_MIN_MS))


class HandOff(Protocol):
    """A connection a draining gateway can send elsewhere."""

    def hand_off(self) -> None:
        """End the connection with a reconnect hint (from the loop's thread)."""


class Drain:
    """The drain state of one app, and the connections it would hand off.

    :param hand_off_at_once: hand connections off when the drain begins
        (a backplane serves the streams elsewhere); else only at
        :meth:`hand_off_all`.
    """

    def __init__(self, *, hand_off_at_once: bool) -> None:
        self.hand_off_at_once = hand_off_at_once
        #: since when the drain runs (``time.time()``); None: not draining
        self.since: float | None = None
        self._handing_off = False
        self._open: set[HandOff] = set()
        # handed off, still writing their last bytes
        self._leaving: set[HandOff] = set()
        #: connections handed off so far
        self.handed_off = 0

    @property
    def draining(self) -> bool:
        """Whether the drain began: no new runs, ``/readyz`` 503."""
        return self.since is not None

    def begin(self) -> None:
        """Start draining (idempotent)."""
        if self.since is not None:
            return
        self.since = time.time()
        if self.hand_off_at_once:
            self.hand_off_all()

    def hand_off_all(self) -> None:
        """Hand off every open connection, and each one that enlists from now on."""
        self._handing_off = True
        for conn in list(self._open):
            self._hand_off(conn)

    def enlist(self, conn: HandOff) -> None:
        """``conn`` opened; handed off at once if the drain already does that."""
        if self._handing_off:
            self._hand_off(conn)
            return
        self._open.add(conn)

    def leave(self, conn: HandOff) -> None:
        """``conn`` ended (however)."""
        self._open.discard(conn)
        self._leaving.discard(conn)

    def open_connections(self) -> int:
        """Connections enlisted and not handed off."""
        return len(self._open)

    def pending(self) -> int:
        """Connections enlisted, handed off or not, that have not ended yet."""
        return len(self._open) + len(self._leaving)

    def _hand_off(self, conn: HandOff) -> None:
        self._open.discard(conn)
        self._leaving.add(conn)
        self.handed_off += 1
        conn.hand_off()
