"""``memory://``: the store that keeps everything in this process's memory.

It is the default and keeps the same rules as the durable backends (the
conformance tests run on it too), so code written against it behaves the
same on SQLite, Redis or Postgres; only a restart forgets it all. It never
raises :class:`~icefloe.store.protocol.StoreUnavailable`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from icefloe.exceptions import StreamNotFound
from icefloe.store.positions import check_position
from icefloe.store.types import (
    NO_SEQ,
    Checkpoint,
    RunRecord,
    RunState,
    StoredChunk,
    StoreStatistics,
    Terminal,
)

__all__ = ["MemoryStore", "check_append"]


@dataclass(slots=True)
class _Run:
    record: RunRecord
    chunks: list[StoredChunk] = field(default_factory=list)
    terminal: Terminal | None = None
    checkpoint: Checkpoint | None = None
    key: str | None = None

    @property
    def last_seq(self) -> int:
        return self.chunks[-1].seq if self.chunks else NO_SEQ


def check_append(
    stream_id: str, last_seq: int, chunks: Sequence[StoredChunk], checkpoint: Checkpoint | None
) -> list[StoredChunk]:
    """The chunks of an ``append`` that are new, after checking the call's rules.

    Shared by every backend so they agree on what a gap is.

    :raises ValueError: seqs not ascending, a gap after ``last_seq``, or a
        checkpoint past the last seq the call leaves stored.
    """
    fresh: list[StoredChunk] = []
    expect = last_seq + 1
    previous = NO_SEQ - 1
    for chunk in chunks:
        if chunk.seq <= previous:
            raise ValueError(
                f"stream {stream_id}: seqs must ascend, got {chunk.seq} after {previous}"
            )
        previous = chunk.seq
        if chunk.seq <= last_seq:
            continue  # stored already: the stored chunk wins
        if chunk.seq != expect:
            raise ValueError(f"stream {stream_id}: seq {chunk.seq} leaves a gap after {expect - 1}")
        fresh.append(chunk)
        expect += 1
    if checkpoint is not None and checkpoint.seq > expect - 1:
        raise ValueError(
            f"stream {stream_id}: checkpoint covers seq {checkpoint.seq}, "
            f"but the last stored seq is {expect - 1}"
        )
    return fresh


class MemoryStore:
    """A :class:`~icefloe.store.protocol.Store` in a few dicts."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._runs: dict[str, _Run] = {}
        self._keys: dict[str, tuple[str, float]] = {}
        self._sessions: dict[str, tuple[bytes, float]] = {}
        self._positions: dict[str, dict[str, bytes]] = {}  # connector positions
        self._created = self._written = self._skipped = self._checkpoints = 0

    @property
    def name(self) -> str:
        return "memory://"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create_run(
        self, run: RunRecord, *, idempotency_key: str | None = None, key_ttl_s: float = 86_400.0
    ) -> str:
        now = self._clock()
        if idempotency_key is not None:
            held = self._keys.get(idempotency_key)
            if held is not None and held[1] > now:
                return held[0]
        if run.stream_id in self._runs:
            raise ValueError(f"a run with stream id {run.stream_id} exists already")
        self._runs[run.stream_id] = _Run(run, key=idempotency_key)
        if idempotency_key is not None:
            self._keys[idempotency_key] = (run.stream_id, now + key_ttl_s)
        self._created += 1
        return run.stream_id

    async def get_run(self, stream_id: str) -> RunState | None:
        entry = self._runs.get(stream_id)
        return None if entry is None else _state(entry)

    async def unfinished_runs(self) -> list[RunState]:
        live = [_state(e) for e in self._runs.values() if e.terminal is None]
        live.sort(key=lambda s: s.run.created_at)
        return live

    async def end_run(self, stream_id: str, terminal: Terminal) -> bool:
        entry = self._get(stream_id)
        if entry.terminal is not None:
            return False
        entry.terminal = terminal
        return True

    async def append(
        self,
        stream_id: str,
        chunks: Sequence[StoredChunk],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> int:
        entry = self._get(stream_id)
        fresh = check_append(stream_id, entry.last_seq, chunks, checkpoint)
        entry.chunks.extend(fresh)
        self._written += len(fresh)
        self._skipped += len(chunks) - len(fresh)
        if checkpoint is not None:
            entry.checkpoint = checkpoint
            self._checkpoints += 1
        return len(fresh)

    async def read(self, stream_id: str, from_seq: int, limit: int) -> list[StoredChunk]:
        entry = self._runs.get(stream_id)
        if entry is None or limit <= 0 or not entry.chunks:
            return []
        first = entry.chunks[0].seq
        start = max(0, from_seq - first)
        return entry.chunks[start : start + limit]

    async def delete_runs(self, ended_before: float, limit: int) -> int:
        ended = [
            (e.terminal.ended_at, sid)
            for sid, e in self._runs.items()
            if e.terminal is not None and e.terminal.ended_at < ended_before
        ]
        # Earliest ended first; the sort is stable, so ties keep creation order.
        ended.sort(key=lambda pair: pair[0])
        doomed = [sid for _, sid in ended[: max(0, limit)]]
        for sid in doomed:
            entry = self._runs.pop(sid)
            if entry.key is not None and self._keys.get(entry.key, ("",))[0] == sid:
                del self._keys[entry.key]
        return len(doomed)

    async def put_session(self, session_id: str, record: bytes, expires_at: float) -> None:
        self._sessions[session_id] = (record, expires_at)

    async def get_session(self, session_id: str) -> bytes | None:
        held = self._sessions.get(session_id)
        if held is None:
            return None
        if held[1] <= self._clock():
            del self._sessions[session_id]
            return None
        return held[0]

    async def delete_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    # -- connector positions (icefloe.store.positions) --

    async def put_position(self, namespace: str, key: str, value: bytes) -> None:
        check_position(namespace, key, value)
        self._positions.setdefault(namespace, {})[key] = bytes(value)

    async def get_position(self, namespace: str, key: str) -> bytes | None:
        check_position(namespace, key)
        return self._positions.get(namespace, {}).get(key)

    async def positions(self, namespace: str) -> dict[str, bytes]:
        check_position(namespace)
        return dict(self._positions.get(namespace, {}))

    def statistics(self) -> StoreStatistics:
        """This store's counters since it was made."""
        return StoreStatistics(self._created, self._written, self._skipped, self._checkpoints)

    def _get(self, stream_id: str) -> _Run:
        entry = self._runs.get(stream_id)
        if entry is None:
            raise StreamNotFound(stream_id)
        return entry


def _state(entry: _Run) -> RunState:
    return RunState(entry.record, entry.last_seq, entry.terminal, entry.checkpoint)
