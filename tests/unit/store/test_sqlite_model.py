"""SqliteStore answers every sequence of calls exactly as MemoryStore does."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icefloe.store import Checkpoint, MemoryStore, Store, StoredChunk, Terminal
from icefloe.store.sqlite import SqliteStore
from storecheck import run_record

_SIDS = st.sampled_from(["a", "b", "c"])
_CALLS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), _SIDS, st.none() | st.sampled_from(["k1", "k2"])),
        st.tuples(
            st.just("append"),
            _SIDS,
            st.integers(-1, 8),  # first seq (-1 is refused as not ascending from NO_SEQ - 1)
            st.integers(0, 4),  # how many
            st.none() | st.integers(-1, 12),  # checkpoint seq
        ),
        st.tuples(st.just("end"), _SIDS, st.sampled_from([1.0, 5.0])),
        st.tuples(st.just("read"), _SIDS, st.integers(0, 10), st.integers(0, 6)),
        st.tuples(st.just("get"), _SIDS),
        st.tuples(st.just("delete"), st.sampled_from([2.0, 9.0]), st.integers(0, 2)),
    ),
    max_size=25,
)


async def _apply(store: Store, call: tuple[Any, ...]) -> object:
    try:
        kind = call[0]
        if kind == "create":
            return await store.create_run(run_record(call[1]), idempotency_key=call[2])
        if kind == "append":
            _, sid, first, count, ckpt = call
            batch = [StoredChunk(s, f"{sid}{s}".encode()) for s in range(first, first + count)]
            checkpoint = None if ckpt is None else Checkpoint(ckpt, b"k%d" % ckpt)
            return await store.append(sid, batch, checkpoint=checkpoint)
        if kind == "end":
            return await store.end_run(call[1], Terminal("done", None, "", call[2]))
        if kind == "read":
            return await store.read(call[1], call[2], call[3])
        if kind == "get":
            return await store.get_run(call[1])
        return await store.delete_runs(call[1], call[2])
    except (ValueError, KeyError) as exc:
        return type(exc).__name__


async def _both(calls: list[tuple[Any, ...]], path: str) -> None:
    memory, sqlite = MemoryStore(), SqliteStore(path)
    await sqlite.open()
    try:
        for call in calls:
            assert await _apply(sqlite, call) == await _apply(memory, call), call
        assert await sqlite.unfinished_runs() == await memory.unfinished_runs()
        assert sqlite.statistics() == memory.statistics()
    finally:
        await sqlite.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_CALLS)
def test_sqlite_matches_memory(calls: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(asyncio.wait_for(_both(calls, str(Path(tmp) / "m.db")), 60))
