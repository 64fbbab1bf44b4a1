"""The protocol's rules, checked on any store: each rule is ``async def (make)``.

``make()`` returns a new, opened store object over the same data (the same
Redis prefix, the same Postgres schema), so a rule can also show what two
processes, or a process and its restarted successor, see of each other.
The network backends' test modules run every rule in :data:`RULES`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import pytest

from icefloe.core.reliability import Reliability
from icefloe.exceptions import StreamNotFound
from icefloe.store import (
    NO_SEQ,
    Checkpoint,
    RunRecord,
    Store,
    StoredChunk,
    StoreStatistics,
    Terminal,
)

Make = Callable[[], Awaitable[Store]]
Rule = Callable[[Make], Awaitable[None]]

#: a bound on anything that waits for the server clock (key and session expiry)
EXPIRY_WAIT_S = 10.0


def run_record(sid: str, at: float = 1.0, tenant: str = "acme") -> RunRecord:
    return RunRecord(
        sid, "t-" + sid, tenant, Reliability.EXACTLY_ONCE, ("entry", "b"), b"msg\x00\xff", at
    )


def chunks(first: int, last: int) -> list[StoredChunk]:
    return [StoredChunk(seq, f"c{seq}".encode()) for seq in range(first, last + 1)]


async def seqs(store: Store, sid: str) -> list[int]:
    return [c.seq for c in await store.read(sid, 0, 1_000_000)]


async def last_seq(store: Store, sid: str) -> int:
    state = await store.get_run(sid)
    assert state is not None
    return state.last_seq


async def until(check: Callable[[], Awaitable[bool]], bound_s: float = EXPIRY_WAIT_S) -> None:
    """Poll ``check`` until it holds (expiry follows the server's clock)."""
    async with asyncio.timeout(bound_s):
        while not await check():
            await asyncio.sleep(0.02)


# -- order and no duplicates -----------------------------------------------------


async def append_skips_stored_seqs_and_refuses_gaps(make: Make) -> None:
    store = await make()
    await store.create_run(run_record("s"))
    assert await store.append("s", chunks(0, 2)) == 3
    assert await store.append("s", chunks(1, 4)) == 2  # 1 and 2 stored already
    assert await store.append("s", chunks(0, 4)) == 0
    with pytest.raises(ValueError, match="seq 6 leaves a gap after 4"):
        await store.append("s", chunks(6, 7))
    assert await seqs(store, "s") == [0, 1, 2, 3, 4]
    assert await store.read("s", 2, 10) == chunks(2, 4)
    assert await store.read("s", 1, 2) == chunks(1, 2)
    assert await store.read("s", 5, 10) == []
    assert await store.read("s", 0, 0) == []
    assert await store.read("s", -3, 1) == chunks(0, 0)
    assert await last_seq(store, "s") == 4
    # the stored chunk wins over a re-sent one with other bytes
    assert await store.append("s", [StoredChunk(4, b"other")]) == 0
    assert (await store.read("s", 4, 1))[0].record == b"c4"


async def a_refused_append_writes_nothing(make: Make) -> None:
    store = await make()
    await store.create_run(run_record("s"))
    await store.append("s", chunks(0, 2))
    # 3 and 4 would fit, 6 leaves a gap: none of the call is written
    with pytest.raises(ValueError, match="gap"):
        await store.append("s", [*chunks(3, 4), StoredChunk(6, b"c6")])
    with pytest.raises(ValueError, match="ascend"):
        await store.append("s", [StoredChunk(2, b"x"), StoredChunk(1, b"y")])
    with pytest.raises(ValueError, match="ascend"):
        await store.append("s", [StoredChunk(3, b"x"), StoredChunk(3, b"y")])
    assert await seqs(store, "s") == [0, 1, 2]
    assert await last_seq(store, "s") == 2


async def a_missing_run_is_none_or_stream_not_found(make: Make) -> None:
    store = await make()
    assert await store.get_run("nope") is None
    assert await store.read("nope", 0, 10) == []
    with pytest.raises(StreamNotFound):
        await store.append("nope", chunks(0, 0))
    with pytest.raises(StreamNotFound):
        await store.end_run("nope", Terminal("done", None, "", 1.0))
    await store.create_run(run_record("s"))
    with pytest.raises(ValueError, match="exists already"):
        await store.create_run(run_record("s"))


async def records_are_opaque_bytes(make: Make) -> None:
    store = await make()
    odd = [bytes(range(256)), b"", b"\x00" * 3, b"r" * (1 << 20), "é\n\r".encode()]
    await store.create_run(run_record("s"))
    await store.append(
        "s", [StoredChunk(i, r) for i, r in enumerate(odd)], checkpoint=Checkpoint(4, odd[0])
    )
    assert [c.record for c in await store.read("s", 0, 10)] == odd
    state = await store.get_run("s")
    assert state is not None
    assert state.checkpoint == Checkpoint(4, odd[0])
    assert state.run == run_record("s")


# -- atomic checkpoints ----------------------------------------------------------


async def a_checkpoint_is_written_with_its_chunks_or_refused(make: Make) -> None:
    store = await make()
    await store.create_run(run_record("s"))
    state = await store.get_run("s")
    assert state is not None
    assert (state.last_seq, state.checkpoint) == (NO_SEQ, None)
    with pytest.raises(ValueError, match="checkpoint covers seq 5"):
        await store.append("s", chunks(0, 1), checkpoint=Checkpoint(5, b"x"))
    state = await store.get_run("s")
    assert state is not None
    assert (state.last_seq, state.checkpoint) == (NO_SEQ, None)  # neither half written
    assert await store.read("s", 0, 10) == []
    await store.append("s", chunks(0, 1), checkpoint=Checkpoint(1, b"x"))
    # a checkpoint alone, covering stored seqs, replaces the previous one
    assert await store.append("s", [], checkpoint=Checkpoint(0, b"y")) == 0
    with pytest.raises(ValueError, match="checkpoint"):
        await store.append("s", [], checkpoint=Checkpoint(2, b"z"))
    state = await store.get_run("s")
    assert state is not None
    assert (state.last_seq, state.checkpoint) == (1, Checkpoint(0, b"y"))


# -- one winner per idempotency key ----------------------------------------------


async def an_idempotency_key_has_one_winner_until_it_expires(make: Make) -> None:
    store = await make()
    assert await store.create_run(run_record("a"), idempotency_key="acme/k", key_ttl_s=0.3) == "a"
    assert await store.create_run(run_record("b"), idempotency_key="acme/k", key_ttl_s=0.3) == "a"
    assert await store.get_run("b") is None
    assert await store.create_run(run_record("x"), idempotency_key="acme/other") == "x"

    async def expired() -> bool:
        return await store.create_run(run_record("c"), idempotency_key="acme/k") == "c"

    await until(expired)
    assert await store.create_run(run_record("d"), idempotency_key="acme/k") == "c"


async def a_hundred_concurrent_creates_with_one_key_make_one_run(make: Make) -> None:
    stores = [await make() for _ in range(4)]  # as if four processes
    winners = await asyncio.gather(
        *(
            stores[i % 4].create_run(run_record(f"r{i}", at=float(i)), idempotency_key="acme/k")
            for i in range(100)
        )
    )
    assert len(set(winners)) == 1
    runs = await stores[0].unfinished_runs()
    assert [s.run.stream_id for s in runs] == winners[:1]


async def a_key_whose_run_exists_claims_nothing(make: Make) -> None:
    store = await make()
    await store.create_run(run_record("s"))
    with pytest.raises(ValueError, match="exists already"):
        await store.create_run(run_record("s"), idempotency_key="acme/k")
    # the refused call's claim was undone with it
    assert await store.create_run(run_record("t"), idempotency_key="acme/k") == "t"


# -- first terminal wins, unfinished runs ----------------------------------------


async def the_first_terminal_wins(make: Make) -> None:
    store, other = await make(), await make()
    await store.create_run(run_record("s"))
    ends = [Terminal("failed", f"code{i}", f"try {i}", float(i)) for i in range(20)]
    won = await asyncio.gather(*((store, other)[i % 2].end_run("s", t) for i, t in enumerate(ends)))
    assert won.count(True) == 1
    state = await other.get_run("s")
    assert state is not None
    assert state.terminal == ends[won.index(True)]
    assert not await store.end_run("s", Terminal("done", None, "", 99.0))
    await store.create_run(run_record("d"))
    await store.end_run("d", Terminal("done", None, "", 5.0))
    state = await store.get_run("d")
    assert state is not None
    assert state.terminal == Terminal("done", None, "", 5.0)


async def unfinished_runs_are_listed_oldest_first(make: Make) -> None:
    store = await make()
    for sid, at in (("new", 3.0), ("old", 1.0), ("ended", 0.5), ("mid", 2.0)):
        await store.create_run(run_record(sid, at=at))
    await store.append("mid", chunks(0, 3), checkpoint=Checkpoint(2, b"st"))
    await store.end_run("ended", Terminal("cancelled", "cancelled", "", 3.0))
    listed = await store.unfinished_runs()
    assert [s.run.stream_id for s in listed] == ["old", "mid", "new"]
    assert listed[1].last_seq == 3
    assert listed[1].checkpoint == Checkpoint(2, b"st")
    assert listed[1].run == run_record("mid", at=2.0)


# -- retention ---------------------------------------------------------------------


async def retention_forgets_ended_runs_with_their_chunks_and_keys(make: Make) -> None:
    store = await make()
    for i in range(5):
        await store.create_run(run_record(f"e{i}"), idempotency_key=f"acme/k{i}")
        await store.append(f"e{i}", chunks(0, 9), checkpoint=Checkpoint(9, b"st"))
        await store.end_run(f"e{i}", Terminal("done", None, "", 10.0 + i))
    await store.create_run(run_record("live"))
    assert await store.delete_runs(ended_before=10.0, limit=10) == 0  # strictly before
    assert await store.delete_runs(ended_before=0.0, limit=0) == 0
    assert await store.delete_runs(ended_before=100.0, limit=3) == 3  # oldest ended first
    assert [await store.get_run(f"e{i}") is None for i in range(5)] == [True] * 3 + [False] * 2
    assert await store.read("e0", 0, 10) == []
    # the key went with its run: a new run may claim it
    assert await store.create_run(run_record("n0", at=2.0), idempotency_key="acme/k0") == "n0"
    assert await store.create_run(run_record("n3"), idempotency_key="acme/k3") == "e3"
    assert await store.delete_runs(ended_before=100.0, limit=10) == 2
    assert [s.run.stream_id for s in await store.unfinished_runs()] == ["live", "n0"]


# -- sessions --------------------------------------------------------------------------


async def sessions_are_replaced_deleted_and_expire(make: Make) -> None:
    store = await make()
    later = time.time() + 600
    assert await store.get_session("w") is None
    await store.put_session("w", b"one", later)
    await store.put_session("w", b"two\x00", later)
    assert await store.get_session("w") == b"two\x00"
    await store.delete_session("w")
    await store.delete_session("w")  # absent: no error
    assert await store.get_session("w") is None
    await store.put_session("old", b"x", time.time() - 1)
    assert await store.get_session("old") is None
    await store.put_session("brief", b"x", time.time() + 0.3)

    async def expired() -> bool:
        return await store.get_session("brief") is None

    await until(expired)


# -- concurrency and restarts ------------------------------------------------------------


async def concurrent_appends_store_each_seq_once(make: Make) -> None:
    stores = [await make() for _ in range(3)]
    await stores[0].create_run(run_record("s"))
    last = 199

    async def writer(k: int) -> int:
        # each writer re-sends the whole stream in its own batch sizes
        store, size, total, seq = stores[k % 3], 1 + k % 7, 0, 0
        while seq <= last:
            top = min(last, seq + size - 1)
            try:
                total += await store.append("s", chunks(seq, top))
            except ValueError:
                # another writer has not reached seq yet: start again from
                # what is stored (an honest writer resumes from last_seq)
                seq = await last_seq(store, "s") + 1
                continue
            seq = top + 1
        return total

    written = await asyncio.gather(*(writer(k) for k in range(8)))
    assert sum(written) == last + 1  # every seq written by exactly one call
    assert await stores[1].read("s", 0, 1000) == chunks(0, last)


async def concurrent_appends_to_many_streams(make: Make) -> None:
    store = await make()
    for i in range(16):
        await store.create_run(run_record(f"s{i}"))

    async def writer(i: int) -> None:
        for first in range(0, 64, 8):
            cp = Checkpoint(first + 7, f"{i}/{first}".encode())
            await store.append(f"s{i}", chunks(first, first + 7), checkpoint=cp)

    await asyncio.gather(*(writer(i) for i in range(16)))
    for i in range(16):
        assert await store.read(f"s{i}", 0, 100) == chunks(0, 63)
        state = await store.get_run(f"s{i}")
        assert state is not None
        assert state.checkpoint == Checkpoint(63, f"{i}/56".encode())


async def a_restarted_store_sees_what_the_first_wrote(make: Make) -> None:
    first = await make()
    await first.create_run(run_record("s", at=5.0), idempotency_key="acme/k")
    await first.append("s", chunks(0, 4), checkpoint=Checkpoint(3, b"st"))
    await first.put_session("w", b"sess", time.time() + 600)
    await first.close()
    await first.close()  # idempotent
    second = await make()
    state = await second.get_run("s")
    assert state is not None
    assert (state.last_seq, state.checkpoint, state.terminal) == (4, Checkpoint(3, b"st"), None)
    assert [s.run.stream_id for s in await second.unfinished_runs()] == ["s"]
    assert await second.create_run(run_record("t"), idempotency_key="acme/k") == "s"
    assert await second.get_session("w") == b"sess"
    # the successor continues the stream where the first left it
    assert await second.append("s", chunks(3, 6)) == 2
    with pytest.raises(ValueError, match="gap"):
        await second.append("s", chunks(8, 8))
    assert await seqs(second, "s") == list(range(7))


async def a_writer_that_was_overtaken_still_obeys_the_rules(make: Make) -> None:
    # one object appends, another moves the stream on behind its back; the
    # first's next appends must judge gaps and duplicates against the server
    a, b = await make(), await make()
    await a.create_run(run_record("s"))
    assert await a.append("s", chunks(0, 1)) == 2
    assert await b.append("s", chunks(2, 5)) == 4
    assert await a.append("s", chunks(2, 6)) == 1
    with pytest.raises(ValueError, match="gap after 6"):
        await a.append("s", chunks(8, 9))
    assert await a.append("s", chunks(7, 7), checkpoint=Checkpoint(7, b"c")) == 1
    assert await seqs(b, "s") == list(range(8))


@runtime_checkable
class _Counted(Protocol):
    def statistics(self) -> StoreStatistics: ...


async def statistics_count_this_objects_writes(make: Make) -> None:
    store = await make()
    assert isinstance(store, _Counted)
    await store.create_run(run_record("s"))
    await store.create_run(run_record("t"), idempotency_key="k")
    await store.create_run(run_record("u"), idempotency_key="k")  # holds: not created
    await store.append("s", chunks(0, 3), checkpoint=Checkpoint(3, b""))
    await store.append("s", chunks(2, 5))
    stats = store.statistics()
    assert (stats.runs_created, stats.chunks_written) == (2, 6)
    assert (stats.duplicates_skipped, stats.checkpoints_written) == (2, 1)


RULES: list[Rule] = [
    append_skips_stored_seqs_and_refuses_gaps,
    a_refused_append_writes_nothing,
    a_missing_run_is_none_or_stream_not_found,
    records_are_opaque_bytes,
    a_checkpoint_is_written_with_its_chunks_or_refused,
    an_idempotency_key_has_one_winner_until_it_expires,
    a_hundred_concurrent_creates_with_one_key_make_one_run,
    a_key_whose_run_exists_claims_nothing,
    the_first_terminal_wins,
    unfinished_runs_are_listed_oldest_first,
    retention_forgets_ended_runs_with_their_chunks_and_keys,
    sessions_are_replaced_deleted_and_expire,
    concurrent_appends_store_each_seq_once,
    concurrent_appends_to_many_streams,
    a_restarted_store_sees_what_the_first_wrote,
    a_writer_that_was_overtaken_still_obeys_the_rules,
    statistics_count_this_objects_writes,
]
