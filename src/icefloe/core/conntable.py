"""The server's TCP connections before authentication: sans-I/O accounting.

A client with no credentials can hold a socket open without ever finishing a
request: sending nothing, dribbling a request head a byte at a time
(slowloris), or sending an endless header line. This table bounds all three,
and the number of sockets, so that new clients are still answered near the
open-files limit. The transport (``icefloe.transport.http_protocol``) feeds
it connection events and acts on its answers; the clock is passed in.

Each connection is in one phase:

============  =================================================  ==============================
phase         what the connection is doing                       its timer
============  =================================================  ==============================
``WAITING``   nothing of a request yet: just connected, or       ``keep_alive_timeout_s`` from
              between two requests                               entering it
``HEAD``      the request line and headers are arriving          ``header_timeout_s`` from their
                                                                 first byte
``ACTIVE``    a request is served: its body, its response, a     none
              stream of any length
``UPGRADED``  a WebSocket                                        none
============  =================================================  ==============================

Transitions: connect → ``WAITING``; a first byte → ``HEAD``; the head
complete → ``ACTIVE``; the request read and its response sent →
``WAITING``; an upgrade → ``UPGRADED``. A timer never extends: bytes that
trickle in do not move a ``HEAD`` deadline.

Limits (:class:`ConnectionLimits`), and the policy at each:

* a head (request line and headers) over ``max_header_bytes``, or with more
  than ``max_headers`` fields: refused (the transport answers 431). The
  parser is never given more than ``max_header_bytes`` of one head
  (:meth:`ConnectionTable.head_room`), so an unterminated line holds no more;
* ``max_per_address`` open connections from one peer address (trusted
  proxies exempt): the next one from it is refused at connect;
* ``capacity`` open connections in all: a new one first evicts the
  connection that has waited longest without a request in progress
  (``WAITING`` or ``HEAD``, oldest first); with none to evict it is refused.

A transition in a phase that forbids it raises
:class:`~icefloe.exceptions.InvalidState` naming the phase;
:meth:`ConnectionTable.statistics` counts what was refused and evicted.

Invariants: every admitted connection is in exactly one address count;
``len(table) <= capacity``; a connection is in the eviction order exactly
when its phase is ``WAITING`` or ``HEAD``.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from icefloe.exceptions import InvalidState

__all__ = [
    "DEFAULT_HEADER_TIMEOUT_S",
    "DEFAULT_KEEP_ALIVE_TIMEOUT_S",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_PER_ADDRESS",
    "Admission",
    "ConnectionLimits",
    "ConnectionTable",
    "ConnectionTableStatistics",
    "HeadRefusal",
    "Phase",
    "Refusal",
]

#: request line + headers, bytes (nginx's and h11's default buffer, Node's limit)
DEFAULT_MAX_HEADER_BYTES: Final = 16 * 1024
#: header fields per request (Apache's LimitRequestFields)
DEFAULT_MAX_HEADERS: Final = 100
#: seconds for a whole request head to arrive, from its first byte
DEFAULT_HEADER_TIMEOUT_S: Final = 10.0
#: seconds a connection may wait with no request in progress (uvicorn's default)
DEFAULT_KEEP_ALIVE_TIMEOUT_S: Final = 5.0
#: open connections per peer address (the per-principal streaming default)
DEFAULT_MAX_PER_ADDRESS: Final = 4096

T = TypeVar("T", bound=Hashable)


class Phase(enum.IntEnum):
    """What a connection is doing; see the module docstring's table."""

    WAITING = 0
    HEAD = 1
    ACTIVE = 2
    UPGRADED = 3


class Refusal(enum.Enum):
    """Why a new connection is closed at connect."""

    #: its address holds ``max_per_address`` connections
    PER_ADDRESS = enum.auto()
    #: ``capacity`` connections are open and none is waiting to be evicted
    FULL = enum.auto()


class HeadRefusal(enum.Enum):
    """Why a request head is refused (431)."""

    #: request line + headers over ``max_header_bytes``
    TOO_MANY_BYTES = enum.auto()
    #: more than ``max_headers`` header fields
    TOO_MANY_FIELDS = enum.auto()


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The limits of connections before authentication (docs/security.md,
    "Connections and headers"); ``None`` turns a cap off."""

    #: request line + headers of one request, bytes (over: 431)
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    #: header fields of one request (over: 431)
    max_headers: int = DEFAULT_MAX_HEADERS
    #: seconds for a request head to arrive from its first byte (over: 408, closed)
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    #: seconds a connection may wait with no request in progress (over: closed)
    keep_alive_timeout_s: float = DEFAULT_KEEP_ALIVE_TIMEOUT_S
    #: open connections from one peer address (over: closed at connect)
    max_per_address: int | None = DEFAULT_MAX_PER_ADDRESS
    #: open connections in all; ``None``: the open-files limit minus a reserve,
    #: worked out by the server when it starts
    max_open: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_headers"):
            _check_count(name, getattr(self, name))
        for name in ("max_per_address", "max_open"):
            value = getattr(self, name)
            if value is not None:
                _check_count(name, value)
        for name in ("header_timeout_s", "keep_alive_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number of seconds, got {value!r}")
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be > 0, got {value!r}")


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class Admission(Generic[T]):
    """The answer to a new connection."""

    #: why it is refused; ``None``: admitted
    refusal: Refusal | None = None
    #: a connection to close to make room for it
    evicted: T | None = None

    @property
    def admitted(self) -> bool:
        return self.refusal is None


@dataclass(frozen=True, slots=True)
class ConnectionTableStatistics:
    """A snapshot of a :class:`ConnectionTable` and its counters."""

    #: open connections
    open: int
    #: of which waiting with no request in progress, or sending a head
    waiting: int
    #: peer addresses with an open connection
    addresses: int
    #: open connections at most (``None``: no cap)
    capacity: int | None
    #: connections refused at connect, by cause
    refused_per_address: int
    refused_full: int
    #: connections closed to make room for a new one
    evicted: int
    #: heads refused for their size or field count
    heads_refused: int


class _Conn:
    """One connection's record (mutable; the table's own)."""

    __slots__ = ("address", "exempt", "fields", "head_bytes", "phase", "reading", "since")

    def __init__(self, address: str, exempt: bool, now: float) -> None:
        self.address = address
        self.exempt = exempt
        self.phase = Phase.WAITING
        #: when the current phase's timer started
        self.since = now
        self.head_bytes = 0
        self.fields = 0
        #: the current request's body is still arriving
        self.reading = False


class ConnectionTable(Generic[T]):
    """Every open connection of one server, keyed by an owner (the transport's
    protocol object); see the module docstring for phases and policies."""

    def __init__(self, limits: ConnectionLimits, capacity: int | None = None) -> None:
        self.limits = limits
        #: open connections at most (``None``: no cap)
        self.capacity = limits.max_open if limits.max_open is not None else capacity
        self._conns: dict[T, _Conn] = {}
        self._per_address: dict[str, int] = {}
        #: WAITING and HEAD connections, the longest waiting first
        self._waiting: OrderedDict[T, None] = OrderedDict()
        self._refused = dict.fromkeys(Refusal, 0)
        self._evicted = 0
        self._heads_refused = 0

    def __len__(self) -> int:
        return len(self._conns)

    def __contains__(self, owner: object) -> bool:
        return owner in self._conns

    def count(self, address: str) -> int:
        """Open connections from ``address``."""
        return self._per_address.get(address, 0)

    def admit(self, owner: T, address: str, now: float, *, exempt: bool = False) -> Admission[T]:
        """A new connection from ``address``: admitted (``WAITING``), maybe
        evicting another, or refused. ``exempt`` (a trusted proxy) skips the
        per-address cap."""
        if owner in self._conns:
            raise InvalidState("the connection is admitted already")
        cap = self.limits.max_per_address
        if not exempt and cap is not None and self.count(address) >= cap:
            self._refused[Refusal.PER_ADDRESS] += 1
            return Admission(Refusal.PER_ADDRESS)
        evicted: T | None = None
        if self.capacity is not None and len(self._conns) >= self.capacity:
            if not self._waiting:
                self._refused[Refusal.FULL] += 1
                return Admission(Refusal.FULL)
            evicted = next(iter(self._waiting))
            self.release(evicted)
            self._evicted += 1
        self._conns[owner] = _Conn(address, exempt, now)
        self._per_address[address] = self.count(address) + 1
        self._waiting[owner] = None
        return Admission(None, evicted)

    def release(self, owner: T) -> None:
        """The connection closed (a second call does nothing)."""
        conn = self._conns.pop(owner, None)
        if conn is None:
            return
        self._waiting.pop(owner, None)
        left = self._per_address[conn.address] - 1
        if left:
            self._per_address[conn.address] = left
        else:
            del self._per_address[conn.address]

    def phase(self, owner: T) -> Phase:
        return self._conn(owner).phase

    def statistics(self) -> ConnectionTableStatistics:
        """A snapshot of the table's size, cap and counters."""
        return ConnectionTableStatistics(
            open=len(self._conns),
            waiting=len(self._waiting),
            addresses=len(self._per_address),
            capacity=self.capacity,
            refused_per_address=self._refused[Refusal.PER_ADDRESS],
            refused_full=self._refused[Refusal.FULL],
            evicted=self._evicted,
            heads_refused=self._heads_refused,
        )

    def head_room(self, owner: T) -> int | None:
        """Bytes the parser may still be given of the current head; ``None``
        while no head is awaited (``ACTIVE``, ``UPGRADED``: feed everything)."""
        conn = self._conn(owner)
        if conn.phase > Phase.HEAD:
            return None
        return self.limits.max_header_bytes - conn.head_bytes

    def head_bytes(self, owner: T, n: int, now: float) -> HeadRefusal | None:
        """``n`` bytes were given to the parser while a head was awaited, and
        the head is still open after them (the first bytes start its timer).
        Refused once they fill ``max_header_bytes``: the caller never gives
        more than :meth:`head_room`, so a head that needs more is over it."""
        conn = self._conn(owner)
        if conn.phase > Phase.HEAD or n <= 0:
            return None
        if conn.phase is Phase.WAITING:
            conn.phase = Phase.HEAD
            conn.since = now
        conn.head_bytes += n
        if conn.head_bytes >= self.limits.max_header_bytes:
            self._heads_refused += 1
            return HeadRefusal.TOO_MANY_BYTES
        return None

    def header_field(self, owner: T) -> HeadRefusal | None:
        """One header field parsed; refused past ``max_headers``."""
        conn = self._conn(owner)
        conn.fields += 1
        if conn.fields > self.limits.max_headers:
            self._heads_refused += 1
            return HeadRefusal.TOO_MANY_FIELDS
        return None

    def head_complete(self, owner: T) -> None:
        """The request head is parsed: ``ACTIVE`` until the request is read
        and answered (a pipelined head completes while ``ACTIVE``)."""
        conn = self._conn(owner, Phase.WAITING, Phase.HEAD, Phase.ACTIVE)
        conn.phase = Phase.ACTIVE
        conn.head_bytes = 0
        conn.fields = 0
        conn.reading = True
        self._waiting.pop(owner, None)

    def request_complete(self, owner: T, now: float, *, answered: bool) -> None:
        """The request's body is read; ``answered``: its response is sent too."""
        conn = self._conn(owner, Phase.ACTIVE, Phase.UPGRADED)
        conn.reading = False
        if answered:
            self._wait(owner, conn, now)

    def response_complete(self, owner: T, now: float) -> None:
        """The response is sent; ``WAITING`` once the request is read too."""
        conn = self._conn(owner)
        if conn.phase is Phase.ACTIVE and not conn.reading:
            self._wait(owner, conn, now)

    def upgraded(self, owner: T) -> None:
        """The connection became a WebSocket: no timer, still counted."""
        conn = self._conn(owner, Phase.ACTIVE)
        conn.phase = Phase.UPGRADED
        self._waiting.pop(owner, None)

    def deadline(self, owner: T) -> float | None:
        """When the connection's current phase times out (``None``: never)."""
        conn = self._conn(owner)
        if conn.phase is Phase.WAITING:
            return conn.since + self.limits.keep_alive_timeout_s
        if conn.phase is Phase.HEAD:
            return conn.since + self.limits.header_timeout_s
        return None

    def expired(self, owner: T, now: float) -> Phase | None:
        """The phase that timed out at ``now`` (``WAITING``: idle, ``HEAD``:
        too slow a head), or ``None``."""
        deadline = self.deadline(owner)
        if deadline is None or now < deadline:
            return None
        return self._conn(owner).phase

    def _conn(self, owner: T, *phases: Phase) -> _Conn:
        """The record of ``owner``, which must be open (and in one of ``phases``)."""
        conn = self._conns.get(owner)
        if conn is None:
            raise InvalidState("the connection is not in the table (never admitted, or released)")
        if phases and conn.phase not in phases:
            raise InvalidState(f"the connection is {conn.phase.name}")
        return conn

    def _wait(self, owner: T, conn: _Conn, now: float) -> None:
        if conn.phase is Phase.ACTIVE:
            conn.phase = Phase.WAITING
            conn.since = now
            self._waiting[owner] = None
