"""Subscription.held/peek/skip read runs of chunks exactly as one-by-one reads do."""

from __future__ import annotations

import asyncio
import random

import pytest
from flowkit import MakeFlow, until

from icefloe import Context, Headers, Limits, Message, Node, StreamError
from icefloe.exceptions import EndOfStream, ErrorCode, WouldBlock
from icefloe.runtime.node import Adjacency
from icefloe.runtime.subscription import Subscription

H = Headers(tenant="t")


def _idle() -> Adjacency:
    async def idle(msg: Message, ctx: Context) -> None:
        pass

    return Node(idle, name="idle").to()


def _read_run(reader: Subscription, limit: int) -> list[str]:
    n = min(reader.held(), limit)
    texts = [reader.peek(i).text for i in range(n)]
    reader.skip(n)
    return texts


@pytest.mark.parametrize("history", [0, 16])
async def test_skip_matches_one_by_one_reads(make_flow: MakeFlow, history: int) -> None:
    flow = make_flow(_idle(), limits=Limits(stream_buffer=8, stream_history=history))
    for seed in range(40):
        rng = random.Random(seed)
        writer = flow.open_stream(H)
        batch = flow.subscribe(writer.stream_id)
        single = flow.subscribe(writer.stream_id) if rng.random() < 0.5 else None
        got: list[str] = []
        want = [str(i) for i in range(rng.randrange(1, 60))]
        async with asyncio.timeout(10):
            for text in want:
                emit = asyncio.ensure_future(writer.emit(text))
                while not emit.done():
                    got += _read_run(batch, rng.randrange(1, 5))
                    if single is not None:
                        while single.held():
                            single.receive_nowait()
                    await asyncio.sleep(0)
                await emit
            closing = asyncio.ensure_future(writer.close())
            while batch.end_reason() is None:
                got += _read_run(batch, rng.randrange(1, 5))
                if single is not None:
                    while single.held():
                        single.receive_nowait()
                await asyncio.sleep(0)
            await closing
        assert got == [*want, ""], f"seed {seed}"
        assert isinstance(batch.end_reason(), EndOfStream)
        with pytest.raises(EndOfStream):
            batch.receive_nowait()


async def test_peek_and_skip_check_their_arguments(make_flow: MakeFlow) -> None:
    flow = make_flow(_idle())
    writer = flow.open_stream(H)
    reader = flow.subscribe(writer.stream_id)
    writer.emit_nowait("a")
    assert reader.held() == 1
    with pytest.raises(IndexError):
        reader.peek(1)
    with pytest.raises(ValueError, match="cannot skip 2"):
        reader.skip(2)
    with pytest.raises(ValueError, match="cannot skip -1"):
        reader.skip(-1)
    reader.skip(0)
    assert reader.peek(0).text == "a"
    reader.skip(1)
    assert reader.held() == 0
    assert reader.end_reason() is None
    with pytest.raises(WouldBlock):
        reader.receive_nowait()
    await writer.close()


async def test_end_reason_names_an_abnormal_end(make_flow: MakeFlow) -> None:
    flow = make_flow(_idle())
    writer = flow.open_stream(H)
    reader = flow.subscribe(writer.stream_id)
    writer.abort(ErrorCode.FAILED, "boom")
    reason = reader.end_reason()
    assert isinstance(reason, StreamError)
    assert (reason.code, reason.message) == (ErrorCode.FAILED, "boom")


async def test_interrupt_wakes_a_waiting_reader_which_stays_attached(make_flow: MakeFlow) -> None:
    flow = make_flow(_idle())
    writer = flow.open_stream(H)
    reader = flow.subscribe(writer.stream_id)
    async with asyncio.timeout(10):
        waiting = asyncio.ensure_future(reader.wait())
        await until(lambda: reader._waiter is not None)
        reader.interrupt()
        await waiting
        assert reader.held() == 0
        writer.emit_nowait("still here")
        assert reader.receive_nowait().text == "still here"
        reader.interrupt()  # nothing waits: a no-op
    await writer.close()
