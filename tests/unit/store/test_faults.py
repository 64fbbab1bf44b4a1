"""FaultyStore: each action at before and after points, on a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from icefloe.core.messages import StreamChunk
from icefloe.exceptions import CorruptRecord
from icefloe.store import MemoryStore, StoredChunk, StoreUnavailable, Terminal, records
from icefloe.store.faults import Fault, FaultyStore, flip_bit
from icefloe.store.sqlite import SqliteStore
from storecheck import chunks, run_record

DONE = Terminal("done", None, "", 5.0)


@pytest_asyncio.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(str(tmp_path / "f.db"))
    await store.open()
    yield store
    await store.close()


async def test_a_dropped_append_is_acknowledged_and_lost() -> None:
    faulty = FaultyStore(MemoryStore())
    await faulty.create_run(run_record("s"))
    faulty.inject("append", Fault.drop(times=1))
    assert await faulty.append("s", chunks(0, 2)) == 3
    assert await faulty.read("s", 0, 10) == []
    assert await faulty.append("s", chunks(0, 2)) == 3  # the fault is spent
    assert await faulty.read("s", 0, 10) == chunks(0, 2)
    assert (faulty.hits("append"), faulty.fired("append")) == (2, 1)


async def test_a_failure_after_the_commit_hides_a_write_that_happened() -> None:
    faulty = FaultyStore(MemoryStore())
    await faulty.create_run(run_record("s"))
    faulty.inject("after_append", Fault.fail())
    with pytest.raises(StoreUnavailable, match="after_append"):
        await faulty.append("s", chunks(0, 1))
    assert await faulty.read("s", 0, 10) == chunks(0, 1)


async def test_skip_lets_the_first_hits_pass() -> None:
    faulty = FaultyStore(MemoryStore())
    await faulty.create_run(run_record("s"))
    faulty.inject("append", Fault.fail(ValueError("third"), skip=2, times=1))
    await faulty.append("s", chunks(0, 0))
    await faulty.append("s", chunks(1, 1))
    with pytest.raises(ValueError, match="third"):
        await faulty.append("s", chunks(2, 2))
    await faulty.append("s", chunks(2, 2))


async def test_a_hang_is_ended_by_the_callers_timeout() -> None:
    faulty = FaultyStore(MemoryStore())
    faulty.inject("get_run", Fault.hang(times=1))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(faulty.get_run("x"), 0.05)
    assert await asyncio.wait_for(faulty.get_run("x"), 5) is None


async def test_a_delay_then_goes_on() -> None:
    faulty = FaultyStore(MemoryStore())
    faulty.inject("put_session", Fault.delay(0.01))
    await asyncio.wait_for(faulty.put_session("w", b"x", 1e12), 5)
    assert await faulty.get_session("w") == b"x"


async def test_kill_calls_the_hook_at_its_point() -> None:
    killed: list[str] = []

    def on_kill() -> None:
        killed.append("now")
        raise SystemExit("killed")

    faulty = FaultyStore(MemoryStore(), on_kill=on_kill)
    await faulty.create_run(run_record("s"))
    faulty.inject("after_end_run", Fault.kill())
    with pytest.raises(SystemExit):
        await faulty.end_run("s", DONE)
    assert killed == ["now"]
    state = await faulty.get_run("s")
    assert state is not None
    assert state.terminal == DONE  # killed after the write


async def test_an_outage_fails_every_call_until_cleared() -> None:
    faulty = FaultyStore(MemoryStore())
    faulty.inject("*", Fault.fail())
    for call in (faulty.get_run("s"), faulty.read("s", 0, 1), faulty.create_run(run_record("s"))):
        with pytest.raises(StoreUnavailable, match="injected"):
            await call
    faulty.clear()
    assert await faulty.create_run(run_record("s")) == "s"
    assert faulty.fired("*") == 3


def test_unknown_points_and_impossible_actions_are_refused() -> None:
    faulty = FaultyStore(MemoryStore())
    with pytest.raises(ValueError, match="unknown fault point 'apend'"):
        faulty.inject("apend", Fault.fail())
    with pytest.raises(ValueError, match="already ran"):
        faulty.inject("after_append", Fault.drop())


def test_flip_bit_flips_exactly_one_bit() -> None:
    record = bytes(range(8))
    for bit in range(64):
        damaged = flip_bit(record, bit)
        diff = sum(bin(a ^ b).count("1") for a, b in zip(record, damaged, strict=True))
        assert diff == 1
    assert flip_bit(b"") == b""


async def test_every_bit_flipped_in_a_stored_chunk_is_detected_none_delivered(
    sqlite: SqliteStore,
) -> None:
    # Real chunk records in a real store, read back through a bit flip at each position.
    faulty = FaultyStore(sqlite)
    await faulty.create_run(run_record("s"))
    stored = [
        StoredChunk(i, records.encode_chunk(StreamChunk("s", i, f"tok{i}"))) for i in range(4)
    ]
    await faulty.append("s", stored)
    bits = len(stored[0].record) * 8
    delivered = detected = 0
    for bit in range(bits):
        faulty.inject("after_read", Fault.corrupt(bit=bit, times=1))
        for chunk in await faulty.read("s", 0, 10):
            try:
                records.decode_chunk(chunk.record, stream_id="s", seq=chunk.seq)
            except CorruptRecord:
                detected += 1
            else:
                delivered += 1
    assert (detected, delivered) == (bits * 4, 0)
    assert [records.decode_chunk(c.record).text for c in await faulty.read("s", 0, 10)] == [
        "tok0",
        "tok1",
        "tok2",
        "tok3",
    ]


async def test_corruption_on_the_way_in_is_caught_on_the_way_out(sqlite: SqliteStore) -> None:
    faulty = FaultyStore(sqlite)
    faulty.inject("create_run", Fault.corrupt())
    faulty.inject("append", Fault.corrupt(bit=3))
    await faulty.create_run(run_record("s"))
    record = records.encode_chunk(StreamChunk("s", 0, "x"))
    await faulty.append("s", [StoredChunk(0, record)])
    (got,) = await sqlite.read("s", 0, 1)
    with pytest.raises(CorruptRecord):
        records.decode_chunk(got.record)
    state = await sqlite.get_run("s")
    assert state is not None
    assert state.run.message != run_record("s").message
