"""Flows from a Source and into a Sink, with in-memory doubles."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from memkit import MemorySink, MemorySource

from icefloe import Headers, Message, Node, StreamError, create
from icefloe.connectors import Inbound, Record, Sink, Source, chunk_record, record_chunk
from icefloe.connectors.deadletter import DEAD_REASON_HEADER, DeadLetters
from icefloe.connectors.flows import StreamFeed, drain_to_sink, feed_messages
from icefloe.core.messages import StreamChunk
from icefloe.core.reassembly import Reassembler
from icefloe.core.wire_errors import ErrorCode
from icefloe.runtime.flow import Flow


@pytest.fixture
async def flow() -> AsyncIterator[Flow]:
    async def sink_node(msg: Message, ctx: object) -> None:
        return None

    f = create(Node(sink_node, name="n").to())
    f.run()
    yield f
    async with asyncio.timeout(10):
        await f.stop()


def records(sid: str, n: int, tenant: str = "acme") -> list[Record]:
    return [
        chunk_record(StreamChunk(sid, seq, f"t{seq}", seq == n - 1), trace_id=sid, tenant=tenant)
        for seq in range(n)
    ]


def test_the_doubles_are_sources_and_sinks() -> None:
    assert isinstance(MemorySink(), Sink)
    assert isinstance(MemorySource([]), Source)


async def test_drain_to_sink_sends_every_chunk_and_flushes_periodically_and_at_the_end() -> None:
    async def chunks() -> AsyncIterator[StreamChunk]:
        for seq in range(7):
            yield StreamChunk("s", seq, str(seq), seq == 6)

    sink = MemorySink()
    sent = await drain_to_sink(chunks(), sink, tenant="acme", trace_id="tr", flush_every=3)
    assert sent == 7
    assert sink.flushes == 3  # after 3, after 6, at the end
    got = [record_chunk(r) for r in sink.flushed]
    assert [g.chunk.seq for g in got] == list(range(7))
    assert {(g.tenant, g.trace_id) for g in got} == {("acme", "tr")}


async def test_a_flows_stream_drains_to_a_sink(flow: Flow) -> None:
    writer = flow.open_stream(Headers(tenant="acme"), stream_id="w")
    reader = flow.subscribe("w")
    for text in ("a", "b"):
        await writer.emit(text)
    await writer.close()
    sink = MemorySink()
    async with asyncio.timeout(10):
        assert await drain_to_sink(reader, sink, tenant="acme", trace_id="w") == 3
    assert [record_chunk(r).chunk.text for r in sink.flushed] == ["a", "b", ""]


async def test_shuffled_duplicated_records_replay_as_flow_streams_in_order(flow: Flow) -> None:
    rng = random.Random(7)
    all_records = records("x", 50) + records("y", 30)
    shuffled = all_records + rng.sample(all_records, 10)
    # keep each stream's order roughly but not exactly: swap neighbours
    rng.shuffle(shuffled)
    source = MemorySource(shuffled)
    feed = StreamFeed(source, flow, reassembler=Reassembler(lambda: 0.0, max_pending=100))
    async with asyncio.timeout(10):
        run = asyncio.create_task(feed.run(until_ended=2))
        # readers attach once each stream exists; the flow holds its history
        while {s.stream_id for s in flow.streams()} < {"x", "y"} and not run.done():
            await asyncio.sleep(0.001)
        stats = await run
    assert stats.fed == 80
    assert stats.duplicates == 10
    assert sorted(source.acked) == list(range(len(shuffled)))
    for sid, n in (("x", 50), ("y", 30)):
        texts = [c.text async for c in flow.subscribe(sid)]
        assert texts == [f"t{seq}" for seq in range(n)]


async def test_a_gap_that_cannot_fill_ends_the_flow_stream_with_history_gone(flow: Flow) -> None:
    recs = records("g", 10)
    del recs[3]
    source = MemorySource(recs)
    feed = StreamFeed(source, flow, reassembler=Reassembler(lambda: 0.0, max_pending=4))
    async with asyncio.timeout(10):
        stats = await feed.run(until_ended=1)
        reader = flow.subscribe("g")
        got: list[int] = []

        async def read() -> None:
            async for chunk in reader:
                got.append(chunk.seq)  # noqa: PERF401 (kept up to the error)

        with pytest.raises(StreamError) as info:
            await read()
    assert info.value.code is ErrorCode.HISTORY_GONE
    assert got == [0, 1, 2]
    assert stats.broken == 1
    # the record that overflowed and the held ones are acked: nothing is left pending
    assert sorted(source.acked) == list(range(8))


async def test_poison_records_go_to_the_dead_letter_sink_with_the_reason(flow: Flow) -> None:
    good = records("p", 2)
    bad = good[0]._replace(value=b"\xc1nonsense")
    source = MemorySource([bad, *good])
    dead_sink = MemorySink()
    feed = StreamFeed(source, flow, dead_letters=DeadLetters(dead_sink))
    async with asyncio.timeout(10):
        stats = await feed.run(until_ended=1)
    assert stats.poison == 1
    (dead,) = dead_sink.flushed
    assert dead.value == bad.value
    assert dead.header(DEAD_REASON_HEADER)
    assert sorted(source.acked) == [0, 1, 2]


async def test_feed_messages_emits_one_message_per_record_then_acks() -> None:
    seen: list[StreamChunk] = []

    async def node(msg: Message, ctx: object) -> None:
        seen.append(msg.payload)

    flow = create(Node(node, name="n").to())
    flow.run()
    try:
        source = MemorySource([*records("m", 3), Record(b"m", b"junk")])
        async with asyncio.timeout(10):
            stats = await feed_messages(source, flow, limit=4)
            while len(seen) < 3:
                await asyncio.sleep(0.001)
    finally:
        await flow.stop()
    assert [c.seq for c in seen] == [0, 1, 2]
    assert (stats.fed, stats.poison) == (3, 1)
    assert source.acked == [0, 1, 2, 3]


async def test_a_stream_whose_records_stop_coming_ends_interrupted(flow: Flow) -> None:
    now = [0.0]

    class Ticking(MemorySource):
        async def _iterate(self) -> AsyncIterator[Inbound]:
            async for inbound in super()._iterate():
                now[0] += 1.0  # one second per record
                yield inbound

    # "q" sends 3 chunks and goes quiet; "r" goes on long enough to notice
    source = Ticking(records("q", 10)[:3] + records("r", 20))
    r = Reassembler(lambda: now[0], idle_timeout_s=5, gap_timeout_s=100)
    feed = StreamFeed(source, flow, reassembler=r, clock=lambda: now[0], expire_every_s=1)
    async with asyncio.timeout(10):
        stats = await feed.run(until_ended=1)
        reader = flow.subscribe("q")
        got: list[str] = []

        async def read() -> None:
            async for chunk in reader:
                got.append(chunk.text)  # noqa: PERF401 (kept up to the error)

        with pytest.raises(StreamError) as info:
            await read()
    assert info.value.code is ErrorCode.INTERRUPTED
    assert got == ["t0", "t1", "t2"]
    assert stats.broken == 1
