"""EncodedLog: readers sharing one encoding get exactly the bytes they would encode alone."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable

import pytest

from icefloe import Context, Headers, Limits, Message, Node, StreamError, create
from icefloe.core.messages import StreamChunk
from icefloe.exceptions import ErrorCode
from icefloe.runtime.flow import Flow
from icefloe.runtime.node import Adjacency
from icefloe.runtime.subscription import Subscription
from icefloe.transport.encoding import ndjson_chunk, sse_chunk
from icefloe.transport.shared import EncodedLog

H = Headers(tenant="t")


@pytest.fixture
async def flow() -> AsyncIterator[Flow]:
    # Room for a whole schedule: the writer never waits in these tests.
    f = create(_idle_node(), limits=Limits(stream_buffer=10_000, stream_history=10_000))
    f.run()
    yield f
    await f.stop()


def _idle_node() -> Adjacency:
    async def idle(msg: Message, ctx: Context) -> None:
        pass

    return Node(idle, name="idle").to()


def _drain(log: EncodedLog, reader: Subscription, max_bytes: int) -> tuple[bytes, int]:
    out = bytearray()
    chunks = 0
    while (taken := log.take(reader, max_bytes)) is not None:
        assert taken.chunks >= 1
        assert len(taken.data) <= max_bytes or taken.chunks == 1
        out += taken.data
        chunks += taken.chunks
    return bytes(out), chunks


@pytest.mark.parametrize("encode", [sse_chunk, ndjson_chunk])
async def test_random_schedules_give_each_reader_its_exact_bytes(
    flow: Flow, encode: Callable[[StreamChunk], bytes]
) -> None:
    for seed in range(60):
        rng = random.Random(seed)
        writer = flow.open_stream(H)
        log = EncodedLog(encode, max_events=rng.choice([2, 3, 8, 64]))
        readers: list[Subscription] = []
        starts: list[int] = []
        got: list[bytearray] = []
        emitted = 0
        for _ in range(rng.randrange(20, 200)):
            action = rng.random()
            if action < 0.45:
                writer.emit_nowait("x" * rng.randrange(0, 40) + "\n\r" * rng.randrange(0, 2))
                emitted += 1
            elif action < 0.55 or not readers:
                start = rng.randrange(0, emitted + 1) if rng.random() < 0.3 else None
                readers.append(flow.subscribe(writer.stream_id, start, lag_limit=10_000))
                starts.append(readers[-1].next_seq)
                got.append(bytearray())
            else:
                i = rng.randrange(len(readers))
                taken = log.take(readers[i], rng.choice([1, 50, 200, 10_000]))
                if taken is not None:
                    got[i] += taken.data
        await writer.close()
        everything = _all_chunks(flow, writer.stream_id)
        for reader, start, out in zip(readers, starts, got, strict=True):
            rest, _ = _drain(log, reader, 300)
            out += rest
            want = b"".join(encode(c) for c in everything[start:])
            assert bytes(out) == want, f"seed {seed}"
            assert reader.end_reason() is not None


def _all_chunks(flow: Flow, sid: str) -> list[StreamChunk]:
    # A throwaway reader from seq 0 over the retained history.
    reader = flow.subscribe(sid, 0, lag_limit=10_000)
    chunks = [reader.peek(i) for i in range(reader.held())]
    reader.close()
    return chunks


async def test_first_reader_encodes_and_the_rest_share(flow: Flow) -> None:
    calls = 0

    def counting(chunk: StreamChunk) -> bytes:
        nonlocal calls
        calls += 1
        return sse_chunk(chunk)

    writer = flow.open_stream(H)
    log = EncodedLog(counting)
    readers = [flow.subscribe(writer.stream_id, 0, lag_limit=100) for _ in range(50)]
    for i in range(20):
        writer.emit_nowait(str(i))
    outs = [_drain(log, r, 64 * 1024) for r in readers]
    await writer.close()
    assert calls == 20
    assert len({data for data, _ in outs}) == 1
    assert all(n == 20 for _, n in outs)


async def test_a_reader_behind_the_run_encodes_its_own(flow: Flow) -> None:
    writer = flow.open_stream(H)
    log = EncodedLog(sse_chunk, max_events=4)
    late = flow.subscribe(writer.stream_id, 0, lag_limit=1000)
    front = flow.subscribe(writer.stream_id, 0, lag_limit=1000)
    for i in range(30):
        writer.emit_nowait(str(i))
    front_data, _ = _drain(log, front, 100)  # the run now starts well past seq 0
    assert len(log) <= 4 + 1
    late_data, n = _drain(log, late, 100)
    await writer.close()
    assert n == 30
    assert late_data == front_data


async def test_an_overrun_reader_gets_history_gone(flow: Flow) -> None:
    small = create(_idle_node(), limits=Limits(stream_buffer=4))
    small.run()
    try:
        writer = small.open_stream(H)
        log = EncodedLog(sse_chunk)
        fast = small.subscribe(writer.stream_id, 0, lag_limit=2)
        slow = small.subscribe(writer.stream_id, 0, lag_limit=2)
        for i in range(40):
            if not writer.closed:
                while log.take(fast, 1000) is not None:
                    pass
                writer.emit_nowait(str(i))
        with pytest.raises(StreamError) as caught:
            _drain(log, slow, 1000)
        assert caught.value.code is ErrorCode.HISTORY_GONE
    finally:
        await small.stop()


async def test_a_huge_event_still_goes_out_alone(flow: Flow) -> None:
    writer = flow.open_stream(H)
    log = EncodedLog(sse_chunk)
    reader = flow.subscribe(writer.stream_id, 0, lag_limit=100)
    writer.emit_nowait("y" * 5000)
    writer.emit_nowait("z")
    first = log.take(reader, 100)
    assert first is not None
    assert (first.chunks, len(first.data) > 5000) == (1, True)
    second = log.take(reader, 100)
    assert second is not None
    assert second.first.text == "z"
    await writer.close()


def test_max_events_is_checked() -> None:
    with pytest.raises(ValueError, match="max_events"):
        EncodedLog(sse_chunk, max_events=1)
