"""Tests for flow.open_stream (StreamWriter) and flow.subscribe."""

from __future__ import annotations

import asyncio
import gc

import pytest
from flowkit import MakeFlow, read_all, until

from icefloe import (
    Context,
    ErrorCode,
    Flow,
    Headers,
    InvalidState,
    Limits,
    Message,
    Node,
    StreamClosedError,
    StreamError,
    StreamWriter,
    WouldBlock,
)
from icefloe.exceptions import StreamNotFound

H = Headers(tenant="acme")


async def idle(msg: Message, ctx: Context) -> None:
    pass


@pytest.fixture
async def flow(make_flow: MakeFlow) -> Flow:
    return make_flow(Node(idle, name="idle").to(), limits=Limits(stream_buffer=4))


def drop(held: list[StreamWriter]) -> None:
    """Lose the last reference to a writer and collect it."""
    held.clear()
    gc.collect()


def writer_is_waiting(flow: Flow, writer: StreamWriter) -> bool:
    # ``flow`` has this one stream: its producer is the one waiting, if any.
    return flow.brief(writer.stream_id) is not None and flow.stats().streams.producers_waiting == 1


# -- writing -----------------------------------------------------------------------------


async def test_emit_and_close(flow: Flow) -> None:
    writer = flow.open_stream(H)
    reader = flow.subscribe(writer.stream_id)
    assert (writer.next_seq, writer.closed) == (0, False)
    async with asyncio.timeout(10):
        first = await writer.emit("Hel", meta={"k": 1})
        second = await writer.emit("lo", data=b"\x00")
        assert (first.seq, second.seq, writer.next_seq) == (0, 1, 2)
        assert first.stream_id == writer.stream_id
        await writer.close("!")
        await writer.close()  # idempotent
        assert writer.closed
        with pytest.raises(StreamClosedError) as info:
            await writer.emit("late")
        assert info.value.code is None
        chunks, error = await read_all(reader)
    assert error is None
    assert [(c.seq, c.text, c.done) for c in chunks] == [
        (0, "Hel", False),
        (1, "lo", False),
        (2, "!", True),
    ]
    assert chunks[0].meta == {"k": 1}
    assert chunks[1].data == b"\x00"
    assert flow.stats().streams.registered == 0


async def test_open_stream_ids(flow: Flow) -> None:
    named = flow.open_stream(H, stream_id="my-stream")
    assert named.stream_id == "my-stream"
    with pytest.raises(InvalidState):
        flow.open_stream(H, stream_id="my-stream")
    writers = [flow.open_stream(H) for _ in range(3)]
    generated = {w.stream_id for w in writers}
    assert len(generated) == 3
    assert all(len(sid) == 32 for sid in generated)  # uuid4 hex
    for writer in [named, *writers]:
        writer.abort("cancelled")


async def test_a_finished_stream_id_is_not_reused(flow: Flow) -> None:
    writer = flow.open_stream(H, stream_id="once")
    reader = flow.subscribe("once")
    async with asyncio.timeout(10):
        await writer.close()
        assert [c.done async for c in reader] == [True]
    with pytest.raises(StreamClosedError):
        flow.open_stream(H, stream_id="once")


async def test_context_manager_closes_with_done(flow: Flow) -> None:
    async with asyncio.timeout(10):
        async with flow.open_stream(H) as writer:
            reader = flow.subscribe(writer.stream_id)
            await writer.emit("a")
            await writer.emit("b")
        assert writer.closed
        chunks, error = await read_all(reader)
    assert error is None
    assert [(c.text, c.done) for c in chunks] == [("a", False), ("b", False), ("", True)]


async def test_exception_in_context_manager_aborts_with_failed(flow: Flow) -> None:
    writer = flow.open_stream(H)
    reader = flow.subscribe(writer.stream_id)

    async def write_then_fail() -> None:
        async with writer:
            await writer.emit("partial")
            raise KeyError("oops")

    async with asyncio.timeout(10):
        with pytest.raises(KeyError):
            await write_then_fail()
        assert writer.closed
        chunks, error = await read_all(reader)
    assert [c.text for c in chunks] == ["partial"]  # readers drain first
    assert error is not None
    assert error.code is ErrorCode.FAILED
    assert "KeyError" in error.message
    assert flow.stats().streams.registered == 0


@pytest.mark.parametrize(
    ("code", "drained"),
    [
        (ErrorCode.FAILED, ["a", "b"]),
        ("failed", ["a", "b"]),
        (ErrorCode.CANCELLED, []),
        (ErrorCode.TIMEOUT, []),
    ],
)
async def test_abort_ends_readers_with_the_code(
    flow: Flow, code: ErrorCode | str, drained: list[str]
) -> None:
    writer = flow.open_stream(H)
    reader = flow.subscribe(writer.stream_id)
    async with asyncio.timeout(10):
        await writer.emit("a")
        await writer.emit("b")
        writer.abort(code, "stopped by test")
        writer.abort(ErrorCode.FAILED)  # idempotent: the first code stays
        assert writer.closed
        with pytest.raises(StreamClosedError) as info:
            await writer.emit("late")
        assert info.value.code is ErrorCode(code)
        await writer.close()  # a no-op once ended
        chunks, error = await read_all(reader)
    assert [c.text for c in chunks] == drained
    assert error is not None
    assert error.code is ErrorCode(code)
    assert error.message == "stopped by test"
    assert error.stream_id == writer.stream_id


async def test_abort_with_an_unknown_code_changes_nothing(flow: Flow) -> None:
    writer = flow.open_stream(H)
    with pytest.raises(ValueError):
        writer.abort("bogus")
    try:
        assert not writer.closed
        assert (await writer.emit("still open")).seq == 0
    finally:
        writer.abort("cancelled")


# -- backpressure ------------------------------------------------------------------------


async def test_emit_nowait_raises_would_block_when_the_reader_is_a_buffer_behind(
    flow: Flow,
) -> None:
    writer = flow.open_stream(H)
    reader = flow.subscribe(writer.stream_id)
    chunks = [writer.emit_nowait(str(i)) for i in range(4)]
    assert [c.seq for c in chunks] == [0, 1, 2, 3]
    with pytest.raises(WouldBlock):
        writer.emit_nowait("4")
    assert writer.statistics().credit == 0
    assert writer.next_seq == 4  # the refused chunk took no seq
    async with asyncio.timeout(10):
        assert (await anext(reader)).seq == 0
        assert writer.emit_nowait("4").seq == 4
        with pytest.raises(WouldBlock):
            writer.emit_nowait("", done=True)
        assert (await anext(reader)).seq == 1
        writer.emit_nowait("", done=True)
        assert writer.closed
        assert [c.seq async for c in reader] == [2, 3, 4, 5]


async def test_without_readers_a_writer_fills_its_buffer_then_waits(flow: Flow) -> None:
    writer = flow.open_stream(H)
    for i in range(4):
        writer.emit_nowait(str(i))
    with pytest.raises(WouldBlock):
        writer.emit_nowait("4")
    async with asyncio.timeout(10):
        blocked = asyncio.create_task(writer.emit("4"))
        await until(lambda: writer_is_waiting(flow, writer))
        reader = flow.subscribe(writer.stream_id)  # a late reader replays from 0...
        assert (await anext(reader)).text == "0"
        await blocked  # ...and makes room
        closing = asyncio.create_task(writer.close())  # waits for room like any emit
        assert [c.text async for c in reader] == ["1", "2", "3", "4", ""]
        await closing


async def test_emit_waits_for_the_slowest_reader(flow: Flow) -> None:
    writer = flow.open_stream(H)
    fast = flow.subscribe(writer.stream_id)
    slow = flow.subscribe(writer.stream_id)
    async with asyncio.timeout(10):
        for i in range(4):
            await writer.emit(str(i))
        assert [(await anext(fast)).seq for _ in range(4)] == [0, 1, 2, 3]
        blocked = asyncio.create_task(writer.emit("4"))
        await until(lambda: writer_is_waiting(flow, writer))
        assert flow.streams()[0].subscribers == 2
        assert (await anext(slow)).seq == 0
        await blocked
        closing = asyncio.create_task(writer.close())
        assert [c.seq async for c in slow] == [1, 2, 3, 4, 5]
        assert [c.seq async for c in fast] == [4, 5]
        await closing


async def test_a_cancelled_stream_releases_its_blocked_writer(flow: Flow) -> None:
    writer = flow.open_stream(H)
    reader = flow.subscribe(writer.stream_id)
    async with asyncio.timeout(10):
        for i in range(4):
            await writer.emit(str(i))
        blocked = asyncio.create_task(writer.emit("blocked"))
        await until(lambda: writer_is_waiting(flow, writer))
        assert flow.cancel(writer.stream_id)  # the consumer gives up on the stream
        with pytest.raises(StreamClosedError) as info:
            await blocked
        assert info.value.code is ErrorCode.CANCELLED
        with pytest.raises(StreamClosedError):
            await writer.emit("next")
        with pytest.raises(StreamClosedError):
            writer.emit_nowait("next")
        assert writer.closed
        await writer.close()  # no-op
        chunks, error = await read_all(reader)
    assert chunks == []
    assert error is not None
    assert error.code is ErrorCode.CANCELLED
    assert flow.stats().streams.registered == 0


async def test_a_reader_leaving_does_not_end_a_written_stream(flow: Flow) -> None:
    writer = flow.open_stream(H)
    reader = flow.subscribe(writer.stream_id)
    async with asyncio.timeout(10):
        await writer.emit("a")
        assert (await anext(reader)).text == "a"
        await reader.aclose()  # not the owner: only detaches
        assert not writer.closed
        late = flow.subscribe(writer.stream_id, from_seq=None)
        await writer.emit("b")
        await writer.close()
        assert [c.text async for c in late] == ["b", ""]


# -- subscribing -------------------------------------------------------------------------


async def test_subscribe_to_an_unknown_stream_is_key_error(flow: Flow) -> None:
    with pytest.raises(StreamNotFound) as info:
        flow.subscribe("nope")
    assert isinstance(info.value, KeyError)  # the builtin it also is


async def test_subscribe_rejects_negative_from_seq(flow: Flow) -> None:
    writer = flow.open_stream(H)
    with pytest.raises(ValueError, match="from_seq"):
        flow.subscribe(writer.stream_id, from_seq=-1)
    writer.abort("cancelled")


async def test_subscribe_from_the_live_head(flow: Flow) -> None:
    writer = flow.open_stream(H)
    early = flow.subscribe(writer.stream_id)
    async with asyncio.timeout(10):
        await writer.emit("old")
        live = flow.subscribe(writer.stream_id, from_seq=None)
        assert live.next_seq == 1
        await writer.emit("new")
        await writer.close()
        assert [c.text async for c in live] == ["new", ""]
        assert [c.text async for c in early] == ["old", "new", ""]


async def test_history_allows_late_replay_until_it_is_trimmed(make_flow: MakeFlow) -> None:
    flow = make_flow(Node(idle, name="idle").to(), limits=Limits(stream_history=4))
    writer = flow.open_stream(H)
    reader = flow.subscribe(writer.stream_id)
    async with asyncio.timeout(10):
        for i in range(50):
            await writer.emit(str(i))
            assert (await anext(reader)).seq == i
        flow.stats()  # any look at the stream trims what history no longer covers
        with pytest.raises(StreamError) as info:
            flow.subscribe(writer.stream_id, from_seq=0)
        assert info.value.code is ErrorCode.HISTORY_GONE
        replay = flow.subscribe(writer.stream_id, from_seq=46)
        await writer.close()
        assert [c.text async for c in replay] == ["46", "47", "48", "49", ""]
        assert [c.done async for c in reader] == [True]


async def test_without_history_consumed_chunks_are_gone(flow: Flow) -> None:
    writer = flow.open_stream(H)
    reader = flow.subscribe(writer.stream_id)
    async with asyncio.timeout(10):
        await writer.emit("a")
        assert (await anext(reader)).seq == 0
        with pytest.raises(StreamError) as info:
            flow.subscribe(writer.stream_id, from_seq=0)
        assert info.value.code is ErrorCode.HISTORY_GONE
        writer.abort("cancelled")
        with pytest.raises(StreamError):
            await anext(reader)


async def test_an_unread_finished_stream_lingers_for_a_late_reader(flow: Flow) -> None:
    writer = flow.open_stream(H)
    async with asyncio.timeout(10):
        await writer.emit("a")
        await writer.close()
        assert flow.streams()[0].state == "done"
        assert flow.stats().streams.active == 0
        chunks, error = await read_all(flow.subscribe(writer.stream_id))
    assert error is None
    assert [c.text for c in chunks] == ["a", ""]
    assert flow.stats().streams.registered == 0


async def test_without_linger_an_unread_finished_stream_is_dropped(make_flow: MakeFlow) -> None:
    flow = make_flow(Node(idle, name="idle").to(), limits=Limits(linger_s=0))
    writer = flow.open_stream(H)
    await writer.emit("a")
    await writer.close()
    assert flow.stats().streams.registered == 0
    with pytest.raises(KeyError):
        flow.subscribe(writer.stream_id)


# -- leaks -------------------------------------------------------------------------------


async def test_unclosed_writer_warns_and_aborts(flow: Flow) -> None:
    writer = flow.open_stream(H)
    sid = writer.stream_id
    reader = flow.subscribe(sid)
    await writer.emit("a")
    held = [writer]
    del writer
    with pytest.warns(ResourceWarning, match="never closed"):
        drop(held)
    async with asyncio.timeout(10):
        chunks, error = await read_all(reader)
    assert [c.text for c in chunks] == ["a"]
    assert error is not None
    assert error.code is ErrorCode.FAILED


async def test_closed_or_aborted_writers_do_not_warn(flow: Flow) -> None:
    closed = flow.open_stream(H, stream_id="closed")
    aborted = flow.open_stream(H, stream_id="aborted")
    await closed.close()
    aborted.abort("cancelled")
    del closed, aborted
    gc.collect()  # filterwarnings=error turns any ResourceWarning into a failure
    assert [c.done async for c in flow.subscribe("closed")] == [True]
