"""The memory store keeps the rules of icefloe.store.protocol."""

from __future__ import annotations

import pytest

from icefloe.core.reliability import Reliability
from icefloe.exceptions import StreamNotFound
from icefloe.store import (
    NO_SEQ,
    Checkpoint,
    MemoryStore,
    RunRecord,
    Store,
    StoredChunk,
    Terminal,
    open_store,
)


def _run(sid: str, at: float = 1.0) -> RunRecord:
    return RunRecord(sid, "t-" + sid, "acme", Reliability.EXACTLY_ONCE, (), b"msg", at)


def _chunks(first: int, last: int) -> list[StoredChunk]:
    return [StoredChunk(seq, f"c{seq}".encode()) for seq in range(first, last + 1)]


async def test_append_skips_stored_seqs_and_refuses_gaps() -> None:
    store = MemoryStore()
    assert isinstance(store, Store)
    await store.create_run(_run("s"))
    assert await store.append("s", _chunks(0, 2)) == 3
    assert await store.append("s", _chunks(1, 4)) == 2  # 1 and 2 stored already
    with pytest.raises(ValueError, match="gap"):
        await store.append("s", _chunks(6, 7))
    with pytest.raises(StreamNotFound):
        await store.append("nope", _chunks(0, 0))
    assert [c.seq for c in await store.read("s", 2, 10)] == [2, 3, 4]
    assert store.statistics().duplicates_skipped == 2


async def test_checkpoint_is_written_with_its_chunks_or_refused() -> None:
    store = MemoryStore()
    await store.create_run(_run("s"))
    with pytest.raises(ValueError, match="checkpoint"):
        await store.append("s", _chunks(0, 1), checkpoint=Checkpoint(5, b"x"))
    state = await store.get_run("s")
    assert state is not None
    assert state.last_seq == NO_SEQ  # the refused call wrote nothing
    await store.append("s", _chunks(0, 1), checkpoint=Checkpoint(1, b"x"))
    state = await store.get_run("s")
    assert state is not None
    assert state.checkpoint == Checkpoint(1, b"x")


async def test_idempotency_key_has_one_winner_until_it_expires() -> None:
    now = [100.0]
    store = MemoryStore(clock=lambda: now[0])
    assert await store.create_run(_run("a"), idempotency_key="acme/k", key_ttl_s=10) == "a"
    assert await store.create_run(_run("b"), idempotency_key="acme/k", key_ttl_s=10) == "a"
    assert await store.get_run("b") is None
    now[0] = 111.0
    assert await store.create_run(_run("c"), idempotency_key="acme/k", key_ttl_s=10) == "c"


async def test_first_terminal_wins_and_unfinished_runs_are_listed() -> None:
    store = MemoryStore()
    await store.create_run(_run("old", at=1.0))
    await store.create_run(_run("new", at=2.0))
    await store.create_run(_run("ended", at=0.5))
    assert await store.end_run("ended", Terminal("done", None, "", 3.0))
    assert not await store.end_run("ended", Terminal("failed", "internal", "", 4.0))
    assert [s.run.stream_id for s in await store.unfinished_runs()] == ["old", "new"]
    assert await store.delete_runs(ended_before=10.0, limit=10) == 1
    assert await store.get_run("ended") is None


def test_open_store_names_the_schemes_it_knows() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    with pytest.raises(ValueError, match="unknown store URL 'ftp://x'"):
        open_store("ftp://x")
