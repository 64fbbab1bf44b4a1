"""The store conformance suite: every backend keeps the rules of icefloe.store.protocol.

A backend is described by a :class:`Backend`:

* ``make``: an async callable with no argument returning a fresh store,
  **opened and empty** (its own file, database, key prefix...). The suite
  closes every store it made.
* ``reopen`` (``None`` for a backend that keeps nothing, like memory): an
  async callable taking an opened store, closing it, and returning a new
  opened store over the same data, as a restart would.

Each check is an ``async def check(backend) -> None`` in :data:`CHECKS`; a
test module runs them all, for example::

    from storecheck import CHECKS, Backend

    @pytest.fixture
    def backend(tmp_path) -> Backend: ...

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    async def test_conformance(backend, check) -> None:
        await asyncio.wait_for(check(backend), 30)

Expiry (idempotency keys, sessions) is checked with the wall clock: the
backends read time themselves (a network backend may use its server's), so a
check waits a fraction of a second for a short TTL to lapse.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from icefloe.core.reliability import Reliability
from icefloe.exceptions import StreamNotFound
from icefloe.store import (
    NO_SEQ,
    Checkpoint,
    RunRecord,
    Store,
    StoredChunk,
    Terminal,
)

__all__ = ["CHECKS", "Backend", "chunks", "run_record"]


@dataclass(frozen=True)
class Backend:
    """How the suite makes (and, when durable, reopens) one backend's stores."""

    make: Callable[[], Awaitable[Store]]
    reopen: Callable[[Store], Awaitable[Store]] | None = None


def run_record(sid: str, created_at: float = 1.0, tenant: str = "acme") -> RunRecord:
    """A run with recognisable fields."""
    return RunRecord(
        sid,
        "trace-" + sid,
        tenant,
        Reliability.EXACTLY_ONCE,
        ("a", "b"),
        b"message-" + sid.encode(),
        created_at,
    )


def chunks(first: int, last: int, tag: str = "c") -> list[StoredChunk]:
    """Chunks ``first..last`` whose records name their seq."""
    return [StoredChunk(seq, f"{tag}{seq}".encode()) for seq in range(first, last + 1)]


def _terminal(at: float, phase: str = "done", code: str | None = None) -> Terminal:
    return Terminal(phase, code, "" if code is None else "why", at)


class _Session:
    """The stores one check made; closes them all at the end."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.stores: list[Store] = []

    async def make(self) -> Store:
        store = await self.backend.make()
        self.stores.append(store)
        return store

    async def reopen(self, store: Store) -> Store:
        assert self.backend.reopen is not None
        fresh = await self.backend.reopen(store)
        self.stores.append(fresh)
        return fresh

    async def close(self) -> None:
        for store in self.stores:
            await store.close()


Check = Callable[[Backend], Awaitable[None]]
CHECKS: list[Check] = []


def _check(fn: Callable[[Store], Awaitable[None]]) -> Check:
    async def check(backend: Backend) -> None:
        session = _Session(backend)
        try:
            await fn(await session.make())
        finally:
            await session.close()

    check.__name__ = fn.__name__
    check.__doc__ = fn.__doc__
    CHECKS.append(check)
    return check


def _check_with(fn: Callable[[_Session], Awaitable[None]]) -> Check:
    async def check(backend: Backend) -> None:
        session = _Session(backend)
        try:
            await fn(session)
        finally:
            await session.close()

    check.__name__ = fn.__name__
    check.__doc__ = fn.__doc__
    CHECKS.append(check)
    return check


# -- runs ------------------------------------------------------------------------


@_check
async def run_round_trips(store: Store) -> None:
    """A created run reads back whole, with no seq, terminal or checkpoint."""
    assert isinstance(store, Store)
    assert await store.create_run(run_record("s1")) == "s1"
    state = await store.get_run("s1")
    assert state is not None
    assert state.run == run_record("s1")
    assert (state.last_seq, state.terminal, state.checkpoint) == (NO_SEQ, None, None)
    assert await store.get_run("missing") is None


@_check
async def a_stream_id_is_created_once(store: Store) -> None:
    """Creating a run whose stream id exists is a ValueError and changes nothing."""
    await store.create_run(run_record("s1"))
    with pytest.raises(ValueError, match="s1"):
        await store.create_run(run_record("s1", created_at=5.0))
    state = await store.get_run("s1")
    assert state is not None
    assert state.run.created_at == 1.0


@_check
async def unfinished_runs_are_listed_oldest_first(store: Store) -> None:
    """unfinished_runs lists runs with no terminal, by created_at."""
    for sid, at in (("late", 30.0), ("early", 10.0), ("mid", 20.0), ("over", 5.0)):
        await store.create_run(run_record(sid, created_at=at))
    await store.end_run("over", _terminal(40.0))
    assert [s.run.stream_id for s in await store.unfinished_runs()] == ["early", "mid", "late"]


@_check
async def the_first_terminal_wins(store: Store) -> None:
    """end_run on an ended run is False and changes nothing; a missing run raises."""
    await store.create_run(run_record("s1"))
    first = _terminal(10.0, "failed", "interrupted")
    assert await store.end_run("s1", first) is True
    assert await store.end_run("s1", _terminal(11.0)) is False
    state = await store.get_run("s1")
    assert state is not None
    assert state.terminal == first
    with pytest.raises(StreamNotFound):
        await store.end_run("missing", first)


# -- idempotency keys --------------------------------------------------------------


@_check
async def an_idempotency_key_has_one_winner(store: Store) -> None:
    """A second create_run with a live key writes nothing and returns the winner."""
    assert await store.create_run(run_record("a"), idempotency_key="acme/k") == "a"
    assert await store.create_run(run_record("b"), idempotency_key="acme/k") == "a"
    assert await store.get_run("b") is None
    assert await store.create_run(run_record("c"), idempotency_key="acme/other") == "c"


@_check
async def an_expired_idempotency_key_is_free_again(store: Store) -> None:
    """After key_ttl_s the key belongs to the next caller."""
    await store.create_run(run_record("a"), idempotency_key="acme/k", key_ttl_s=0.05)
    await asyncio.sleep(0.2)  # the TTL lapses; nothing to synchronise with
    assert await store.create_run(run_record("b"), idempotency_key="acme/k") == "b"
    assert await store.create_run(run_record("c"), idempotency_key="acme/k") == "b"


@_check
async def concurrent_creates_with_one_key_make_one_run(store: Store) -> None:
    """100 concurrent create_run calls sharing a key: exactly one run exists."""
    winners = await asyncio.gather(
        *(store.create_run(run_record(f"r{i}"), idempotency_key="acme/once") for i in range(100))
    )
    assert len(set(winners)) == 1
    created = [i for i in range(100) if await store.get_run(f"r{i}") is not None]
    assert [f"r{i}" for i in created] == winners[:1]


@_check
async def deleting_a_run_frees_its_key(store: Store) -> None:
    """Retention forgets a run's idempotency key with it."""
    await store.create_run(run_record("a"), idempotency_key="acme/k")
    await store.end_run("a", _terminal(10.0))
    assert await store.delete_runs(ended_before=11.0, limit=10) == 1
    assert await store.create_run(run_record("b"), idempotency_key="acme/k") == "b"


# -- chunks --------------------------------------------------------------------------


@_check
async def chunks_read_back_in_order(store: Store) -> None:
    """Appended chunks read back from any seq, up to a limit, ascending."""
    await store.create_run(run_record("s1"))
    assert await store.append("s1", chunks(0, 9)) == 10
    assert await store.read("s1", 0, 100) == chunks(0, 9)
    assert await store.read("s1", 4, 3) == chunks(4, 6)
    assert await store.read("s1", 10, 5) == []
    assert await store.read("s1", 0, 0) == []
    assert await store.read("missing", 0, 5) == []
    state = await store.get_run("s1")
    assert state is not None
    assert state.last_seq == 9


@_check
async def streams_do_not_mix(store: Store) -> None:
    """Two runs' chunks stay apart."""
    await store.create_run(run_record("s1"))
    await store.create_run(run_record("s2"))
    await store.append("s1", chunks(0, 2, "x"))
    await store.append("s2", chunks(0, 4, "y"))
    assert await store.read("s1", 0, 10) == chunks(0, 2, "x")
    assert await store.read("s2", 0, 10) == chunks(0, 4, "y")


@_check
async def a_stored_seq_is_skipped_and_the_stored_chunk_wins(store: Store) -> None:
    """Re-appending stored seqs skips them (counted); the first record stays."""
    await store.create_run(run_record("s1"))
    await store.append("s1", chunks(0, 2, "first"))
    assert await store.append("s1", chunks(1, 4, "again")) == 2
    got = await store.read("s1", 0, 10)
    assert got == chunks(0, 2, "first") + chunks(3, 4, "again")
    assert await store.append("s1", chunks(0, 4, "again")) == 0


@_check
async def a_gap_is_refused_and_writes_nothing(store: Store) -> None:
    """A gap after the last seq (or seqs not ascending) is a ValueError; nothing is written."""
    await store.create_run(run_record("s1"))
    await store.append("s1", chunks(0, 1))
    with pytest.raises(ValueError, match="gap"):
        await store.append("s1", chunks(2, 3) + chunks(5, 5))
    with pytest.raises(ValueError, match="gap"):
        await store.append("s1", chunks(3, 3))
    with pytest.raises(ValueError, match="ascend"):
        await store.append("s1", [StoredChunk(2, b"x"), StoredChunk(2, b"y")])
    assert await store.read("s1", 0, 10) == chunks(0, 1)
    state = await store.get_run("s1")
    assert state is not None
    assert state.last_seq == 1


@_check
async def appending_to_a_missing_run_raises(store: Store) -> None:
    """append names a run that must exist."""
    with pytest.raises(StreamNotFound):
        await store.append("missing", chunks(0, 0))


@_check
async def an_empty_append_is_harmless(store: Store) -> None:
    """append([]) writes nothing and returns 0."""
    await store.create_run(run_record("s1"))
    assert await store.append("s1", []) == 0
    assert await store.read("s1", 0, 10) == []


@_check
async def records_are_opaque_bytes(store: Store) -> None:
    """Any bytes (NULs, invalid UTF-8, empty, large) come back unchanged."""
    await store.create_run(run_record("s1"))
    odd = [b"", b"\x00\xff\xfe", bytes(range(256)), b"x" * 200_000]
    await store.append("s1", [StoredChunk(i, r) for i, r in enumerate(odd)])
    assert [c.record for c in await store.read("s1", 0, 10)] == odd


# -- checkpoints ------------------------------------------------------------------------


@_check
async def a_checkpoint_is_stored_with_its_chunks(store: Store) -> None:
    """append(..., checkpoint=c) stores both; the latest checkpoint is the run's."""
    await store.create_run(run_record("s1"))
    await store.append("s1", chunks(0, 3), checkpoint=Checkpoint(3, b"state-3"))
    await store.append("s1", chunks(4, 5))
    await store.append("s1", chunks(6, 7), checkpoint=Checkpoint(7, b"state-7"))
    state = await store.get_run("s1")
    assert state is not None
    assert (state.last_seq, state.checkpoint) == (7, Checkpoint(7, b"state-7"))


@_check
async def a_checkpoint_past_the_stored_seqs_writes_nothing(store: Store) -> None:
    """A checkpoint covering an unstored seq is refused with its chunks."""
    await store.create_run(run_record("s1"))
    await store.append("s1", chunks(0, 0), checkpoint=Checkpoint(0, b"ok"))
    with pytest.raises(ValueError, match="checkpoint"):
        await store.append("s1", chunks(1, 2), checkpoint=Checkpoint(5, b"bad"))
    state = await store.get_run("s1")
    assert state is not None
    assert (state.last_seq, state.checkpoint) == (0, Checkpoint(0, b"ok"))
    assert await store.read("s1", 0, 10) == chunks(0, 0)


@_check
async def a_checkpoint_alone_before_any_chunk(store: Store) -> None:
    """A checkpoint at NO_SEQ with no chunk is allowed (a node's initial state)."""
    await store.create_run(run_record("s1"))
    assert await store.append("s1", [], checkpoint=Checkpoint(NO_SEQ, b"init")) == 0
    state = await store.get_run("s1")
    assert state is not None
    assert state.checkpoint == Checkpoint(NO_SEQ, b"init")


@_check
async def concurrent_appends_to_many_streams_all_land(store: Store) -> None:
    """20 streams appending concurrently in small batches each read back whole."""
    sids = [f"s{i}" for i in range(20)]
    for sid in sids:
        await store.create_run(run_record(sid))

    async def writer(sid: str) -> None:
        for first in range(0, 50, 5):
            await store.append(
                sid, chunks(first, first + 4, sid), checkpoint=Checkpoint(first + 4, b"k")
            )

    await asyncio.gather(*(writer(sid) for sid in sids))
    for sid in sids:
        assert await store.read(sid, 0, 100) == chunks(0, 49, sid)


# -- retention ---------------------------------------------------------------------------


@_check
async def retention_forgets_runs_that_ended_before(store: Store) -> None:
    """delete_runs removes ended runs (chunks, checkpoint) older than the cutoff, up to limit."""
    for i, at in enumerate((10.0, 20.0, 30.0)):
        sid = f"old{i}"
        await store.create_run(run_record(sid))
        await store.append(sid, chunks(0, 2), checkpoint=Checkpoint(2, b"k"))
        await store.end_run(sid, _terminal(at))
    await store.create_run(run_record("live"))
    await store.append("live", chunks(0, 2))
    assert await store.delete_runs(ended_before=25.0, limit=1) == 1
    assert await store.delete_runs(ended_before=25.0, limit=10) == 1
    assert await store.delete_runs(ended_before=25.0, limit=10) == 0
    assert await store.get_run("old0") is None
    assert await store.get_run("old1") is None
    assert await store.read("old0", 0, 10) == []
    assert await store.get_run("old2") is not None
    assert await store.read("live", 0, 10) == chunks(0, 2)
    assert await store.delete_runs(ended_before=1e12, limit=0) == 0
    # a deleted stream id may be used again
    await store.create_run(run_record("old0"))
    assert await store.read("old0", 0, 10) == []


@_check
async def retention_takes_the_earliest_ended_first(store: Store) -> None:
    """With a limit, delete_runs forgets the runs that ended first (ties: created first)."""
    for sid, at in (("late", 30.0), ("early", 10.0), ("tie-1", 20.0), ("tie-2", 20.0)):
        await store.create_run(run_record(sid))
        await store.end_run(sid, _terminal(at))
    assert await store.delete_runs(ended_before=100.0, limit=2) == 2
    assert await store.get_run("early") is None
    assert await store.get_run("tie-1") is None
    assert await store.get_run("tie-2") is not None
    assert await store.get_run("late") is not None


# -- sessions ---------------------------------------------------------------------------


@_check
async def sessions_are_stored_replaced_and_deleted(store: Store) -> None:
    """put_session replaces; delete_session forgets (and tolerates absence)."""
    later = time.time() + 3600
    await store.put_session("w1", b"one", later)
    await store.put_session("w2", b"two", later)
    await store.put_session("w1", b"uno", later)
    assert await store.get_session("w1") == b"uno"
    assert await store.get_session("w2") == b"two"
    await store.delete_session("w1")
    await store.delete_session("w1")
    assert await store.get_session("w1") is None
    assert await store.get_session("nope") is None


@_check
async def an_expired_session_is_absent(store: Store) -> None:
    """A session past expires_at reads as None."""
    await store.put_session("gone", b"x", time.time() - 1)
    assert await store.get_session("gone") is None
    await store.put_session("soon", b"y", time.time() + 0.05)
    await asyncio.sleep(0.2)  # the session expires; nothing to synchronise with
    assert await store.get_session("soon") is None


# -- life cycle and durability ----------------------------------------------------------


@_check
async def open_and_close_are_idempotent(store: Store) -> None:
    """open() twice is harmless; so is close() twice (the suite closes again)."""
    await store.open()
    await store.create_run(run_record("s1"))
    assert await store.get_run("s1") is not None
    await store.close()
    await store.close()


@_check_with
async def everything_survives_a_reopen(session: _Session) -> None:
    """A durable backend keeps runs, chunks, checkpoints, terminals, keys, sessions."""
    if session.backend.reopen is None:
        return  # memory: nothing to keep
    store = await session.make()
    await store.create_run(run_record("s1"), idempotency_key="acme/k")
    await store.create_run(run_record("s2", created_at=2.0))
    await store.append("s1", chunks(0, 4), checkpoint=Checkpoint(4, b"st"))
    await store.end_run("s2", _terminal(9.0, "failed", "interrupted"))
    await store.put_session("w", b"sess", time.time() + 3600)
    store = await session.reopen(store)
    s1 = await store.get_run("s1")
    assert s1 is not None
    assert (s1.run, s1.last_seq, s1.checkpoint) == (run_record("s1"), 4, Checkpoint(4, b"st"))
    assert await store.read("s1", 0, 10) == chunks(0, 4)
    s2 = await store.get_run("s2")
    assert s2 is not None
    assert s2.terminal == _terminal(9.0, "failed", "interrupted")
    assert [s.run.stream_id for s in await store.unfinished_runs()] == ["s1"]
    assert await store.create_run(run_record("s3"), idempotency_key="acme/k") == "s1"
    assert await store.get_session("w") == b"sess"
    assert await store.append("s1", chunks(3, 6)) == 2


# -- connector positions (tests/positioncheck.py) ----------------------------------------
from positioncheck import POSITION_CHECKS  # noqa: E402

CHECKS.extend(POSITION_CHECKS)
