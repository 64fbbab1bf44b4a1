"""The run queue and the fenced appends of workers, on the machine's Redis
(issue 12): who owns a stream, who holds an entry, and what a worker that
lost either may still do (nothing)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from cluster import REDIS_URL

from icefloe.backplane.keys import Keys
from icefloe.backplane.runqueue import GROUP, RunQueue
from icefloe.backplane.worker_publish import FENCED, GAP, append_owned, end_owned
from icefloe.core.messages import StreamChunk
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import StreamError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def queue() -> AsyncIterator[RunQueue]:
    prefix = f"icefloe:test:{uuid.uuid4().hex[:10]}:"
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    q = RunQueue(client, Keys(prefix), max_queued=3)
    await q.ensure_group()
    await q.ensure_group()  # a second worker's: the group exists
    try:
        yield q
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def _chunk(sid: str, seq: int, *, done: bool = False) -> StreamChunk:
    return StreamChunk(stream_id=sid, seq=seq, text=f"t{seq}", done=done)


async def test_starts_are_queued_within_the_limit_and_claimed_once(queue: RunQueue) -> None:
    for sid in ("s1", "s2", "s3"):
        await queue.enqueue(sid, "t1", b"message")
    with pytest.raises(StreamError) as refused:
        await queue.enqueue("s4", "t1", b"message")
    assert refused.value.code is ErrorCode.OVERLOADED
    assert (await queue.stats())["queued"] == 3
    a = await queue.claim("a", 2, 10)
    b = await queue.claim("b", 2, 10)
    assert [c.stream_id for c in a + b] == ["s1", "s2", "s3"]
    assert a[0].message == b"message"
    assert await queue.own("s1", "a:1") == ("queued", -1)
    stats = await queue.stats()
    assert (stats["queued"], stats["running"], stats["limit"]) == (0, 3, 3)
    # Done: acknowledged and deleted; another consumer's done is refused.
    assert not await queue.done("b", a[0].entry_id)
    assert await queue.done("a", a[0].entry_id)
    assert (await queue.stats())["running"] == 2
    await queue.enqueue("s4", "t1", b"message")  # room again


async def test_a_stale_owner_appends_nothing_and_each_seq_goes_in_once(queue: RunQueue) -> None:
    keys = queue.keys
    r = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await queue.enqueue("s", "t1", b"m")
        assert await queue.own("s", "A") == ("queued", -1)
        chunks = [_chunk("s", i) for i in range(3)]
        assert await append_owned(r, keys, "s", "A", chunks, 100) == 2
        # Another worker takes the stream over: A is fenced.
        assert await queue.own("s", "B") == ("running", 2)
        assert await append_owned(r, keys, "s", "A", [_chunk("s", 3)], 100) == FENCED
        assert not await end_owned(r, keys, "s", "A", ErrorCode.FAILED, "late")
        # B re-emits stored seqs (dropped), then goes on; a gap is refused.
        again = [_chunk("s", i) for i in range(1, 5)]
        assert await append_owned(r, keys, "s", "B", again, 100) == 4
        assert await append_owned(r, keys, "s", "B", [_chunk("s", 9)], 100) == GAP
        ids = [i.decode() for i, _f in await r.xrange(keys.log("s"))]
        assert ids == [f"{i}-1" for i in range(5)]
        done = [_chunk("s", 5, done=True)]
        assert await append_owned(r, keys, "s", "B", done, 100) == 5
        assert (await r.hget(keys.meta("s"), "state")) == b"done"
    finally:
        await r.aclose()


async def test_a_renewal_reports_the_entries_another_worker_took(queue: RunQueue) -> None:
    r = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await queue.enqueue("s", "t1", b"m")
        await queue.enqueue("u", "t1", b"m")
        taken = await queue.claim("a", 2, 10)
        ids = [c.entry_id for c in taken]
        assert await queue.renew("a", ids, 4) == set()
        # What XAUTOCLAIM does once a lease expired, done at once.
        await r.xclaim(queue.keys.runs, GROUP, "b", 0, [ids[0]], justid=True)
        assert await queue.renew("a", ids, 4) == {ids[0]}
        workers = (await queue.stats())["workers"]
        assert [(w["id"], w["concurrency"], w["running"]) for w in workers] == [("a", 4, 1)]
        # A drain hands the other one back: fenced, then past its lease.
        assert await queue.own("u", "a:u") == ("queued", -1)
        assert await queue.release("u", "a:u")
        assert await append_owned(r, queue.keys, "u", "a:u", [_chunk("u", 0)], 10) == FENCED
        assert await queue.hand_back("a", ids[1])
        assert (await queue.stats())["orphaned"] == 1
        again = await queue.reclaim("c", 4)
        assert [(c.stream_id, c.deliveries) for c in again] == [("u", 2)]
        await queue.leave("a")
        assert (await queue.stats())["workers"] == []
    finally:
        await r.aclose()


async def test_a_start_cancelled_while_queued_is_ended_for_its_readers(queue: RunQueue) -> None:
    await queue.enqueue("s", "t1", b"m")
    assert await queue.cancel_queued("s")
    assert not await queue.cancel_queued("s")
    (claimed,) = await queue.claim("a", 1, 10)
    assert await queue.own("s", "a:s") == ("cancelled", -1)  # left as it is
    assert await queue.done("a", claimed.entry_id)
