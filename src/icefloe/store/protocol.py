"""The one async interface every store backend implements.

A store keeps what must survive a restart of ``icefloe serve``: runs (what
started each durable stream), their chunks in seq order, their checkpoints
and terminals, idempotency keys and WebSocket sessions. The runtime talks to
it only through :class:`Store`; a backend is chosen by URL
(:func:`icefloe.store.open_store`).

Rules every backend keeps (the conformance tests check them):

* **Order and no duplicates.** ``append`` takes chunks in ascending seq
  order. A chunk whose seq is already stored is skipped (the stored chunk
  wins) and counted; the rest must continue the stream without a gap
  (``last_seq + 1``, ``last_seq + 2``...), else ``ValueError`` and nothing of
  that call is written.
* **Atomic checkpoints.** ``append(..., checkpoint=c)`` writes the chunks
  and the checkpoint together or not at all, so a checkpoint never covers a
  seq that is not stored.
* **One winner per idempotency key.** ``create_run`` with a key already
  claimed (and not expired) writes nothing and returns the stream id that
  holds the key; the check and the write are one atomic step, across
  processes for the network backends.
* **First terminal wins.** ``end_run`` on an ended run changes nothing.
* **Positions are kept per (namespace, key).** ``put_position`` replaces;
  the last write wins; namespaces do not mix.
* **Bytes in, bytes out.** Records are opaque; a backend never decodes them.
* **Errors.** An unreachable or failing backend raises
  :class:`StoreUnavailable`; a missing run is ``None`` (or
  :class:`~icefloe.exceptions.StreamNotFound` where a write needs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import IcefloeError
from icefloe.store.types import Checkpoint, RunRecord, RunState, StoredChunk, Terminal

__all__ = ["Store", "StoreUnavailable"]


class StoreUnavailable(IcefloeError):
    """The store did not answer, or answered with an error; the call may be retried.

    ``code`` is ``ErrorCode.UNAVAILABLE`` (503 on the wire).
    """

    code = ErrorCode.UNAVAILABLE


@runtime_checkable
class Store(Protocol):
    """Durable runs, chunks, checkpoints, idempotency keys and sessions."""

    @property
    def name(self) -> str:
        """The backend and where it is, with no secret (``"sqlite:///var/x.db"``)."""
        ...

    async def open(self) -> None:
        """Connect and create what is missing (tables, indexes). Idempotent."""
        ...

    async def close(self) -> None:
        """Flush pending writes and release connections. Idempotent."""
        ...

    # -- runs ----------------------------------------------------------------

    async def create_run(
        self, run: RunRecord, *, idempotency_key: str | None = None, key_ttl_s: float = 86_400.0
    ) -> str:
        """Store a new run; return its stream id.

        With ``idempotency_key`` (scoped by the caller, e.g. ``tenant/key``),
        the first caller wins: a later call within ``key_ttl_s`` of the first
        writes nothing and returns the winner's stream id.

        :raises ValueError: a run with this stream id exists already.
        """
        ...

    async def get_run(self, stream_id: str) -> RunState | None:
        """The run, its last stored seq, terminal and latest checkpoint."""
        ...

    async def unfinished_runs(self) -> list[RunState]:
        """Every run with no terminal, oldest first (crash recovery reads this)."""
        ...

    async def end_run(self, stream_id: str, terminal: Terminal) -> bool:
        """Record how the run ended; False when it had ended already.

        :raises StreamNotFound: no such run.
        """
        ...

    # -- chunks and checkpoints ------------------------------------------------

    async def append(
        self,
        stream_id: str,
        chunks: Sequence[StoredChunk],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> int:
        """Store ``chunks`` (ascending seq) and ``checkpoint`` atomically; return how
        many chunks were new (a seq stored already is skipped and counted).

        :raises ValueError: a gap, or a checkpoint past the last stored seq.
        :raises StreamNotFound: no such run.
        """
        ...

    async def read(self, stream_id: str, from_seq: int, limit: int) -> list[StoredChunk]:
        """Up to ``limit`` stored chunks with seq >= ``from_seq``, ascending.

        Chunks removed by retention are simply absent (the caller compares
        the first seq it gets with the one it asked for).
        """
        ...

    async def delete_runs(self, ended_before: float, limit: int) -> int:
        """Retention: forget up to ``limit`` runs (chunks, checkpoint, keys)
        that ended before ``ended_before`` (wall-clock seconds), the earliest
        ended first (ties: the earliest created first); return how many."""
        ...

    # -- WebSocket sessions --------------------------------------------------------

    async def put_session(self, session_id: str, record: bytes, expires_at: float) -> None:
        """Store (replace) a session until ``expires_at`` (wall-clock seconds)."""
        ...

    async def get_session(self, session_id: str) -> bytes | None:
        """The session's record, ``None`` when absent or expired."""
        ...

    async def delete_session(self, session_id: str) -> None:
        """Forget a session (no error when absent)."""
        ...

    # -- connector positions (icefloe.store.positions: limits) ---------------------

    async def put_position(self, namespace: str, key: str, value: bytes) -> None:
        """Store (replace) ``key``'s position in ``namespace`` (a Kinesis shard's
        checkpoint...): a record, kept until replaced.

        :raises ValueError: a name or value out of :mod:`icefloe.store.positions`' limits.
        """
        ...

    async def get_position(self, namespace: str, key: str) -> bytes | None:
        """``key``'s position in ``namespace``, ``None`` when none was stored."""
        ...

    async def positions(self, namespace: str) -> dict[str, bytes]:
        """Every position in ``namespace``: key -> value (empty when none)."""
        ...
