"""icefloe.testing.open: runs started in memory, their chunks, input, cancel,
failures, timeouts with a clear message, and clean-up on leaving."""

from __future__ import annotations

import asyncio

import pytest

import icefloe.testing
from icefloe import Context, ErrorCode, Headers, InvalidState, Message, Node, create
from icefloe.testing import DONE, FakeClock


async def echo(msg: Message, ctx: Context) -> None:
    for word in f"you said: {msg.payload}".split(" "):
        await ctx.emit_chunk(parent=msg, text=word + " ")
    await ctx.emit_chunk(parent=msg, text="", done=True)


async def chat(msg: Message, ctx: Context) -> None:
    """Asks, then echoes each input until "bye"."""
    await ctx.emit_chunk(parent=msg, text="ask> ")
    async for data in ctx.inputs(parent=msg):
        if data == "bye":
            break
        await ctx.emit_chunk(parent=msg, text=f"[{data}]")
    await ctx.emit_chunk(parent=msg, text="", done=True)


async def broken(msg: Message, ctx: Context) -> None:
    await ctx.emit_chunk(parent=msg, text="partial")
    raise ValueError("model fell over")


@pytest.mark.timeout(30)
async def test_a_run_streams_its_text_in_order() -> None:
    async with icefloe.testing.open(create(Node(echo, name="echo").to())) as t:
        run = await t.start("hi there", headers=Headers(tenant="acme"))
        assert await run.text() == "you said: hi there "
        assert run.terminal == DONE
        assert run.error is None
        chunks = await run.chunks()
        assert [c.seq for c in chunks] == [0, 1, 2, 3, 4]
        assert chunks[-1].done
        assert {c.stream_id for c in chunks} == {run.stream_id}
        run.assert_in_order()
        assert t.runs == (run,)
        assert t.clock is None  # a real-time loop


@pytest.mark.timeout(30)
async def test_input_reaches_the_node_and_its_answers_come_back() -> None:
    async with icefloe.testing.open(create(Node(chat, name="chat").to())) as t:
        run = await t.start("go")
        first = await run.wait_for(1)
        assert first[0].text == "ask> "
        run.send_input("a")
        assert (await run.wait_for(2))[1].text == "[a]"
        run.send_input("b")
        run.send_input("bye")
        assert await run.text() == "ask> [a][b]"
        run.assert_in_order()


@pytest.mark.timeout(30)
async def test_cancel_ends_the_run_with_cancelled() -> None:
    async with icefloe.testing.open(create(Node(chat, name="chat").to())) as t:
        run = await t.start("go")
        await run.wait_for(1)
        assert run.cancel() is True
        assert await run.wait() == ErrorCode.CANCELLED
        assert run.terminal == "cancelled"
        assert run.error is not None
        assert run.error.code is ErrorCode.CANCELLED
        run.assert_in_order()  # what came before the cancel is still in order
        with pytest.raises(AssertionError, match=r"ended with stream .* cancelled"):
            await run.text()


@pytest.mark.timeout(30)
async def test_a_failing_node_is_reported_with_its_code_and_what_came_before() -> None:
    async with icefloe.testing.open(create(Node(broken, name="broken").to())) as t:
        run = await t.start("x")
        assert await run.wait() == ErrorCode.FAILED
        with pytest.raises(AssertionError) as caught:
            await run.text()
        message = str(caught.value)
        assert "failed" in message
        assert "it received 1 chunks, the last seq 0 'partial'" in message


def test_a_run_that_never_ends_fails_the_wait_with_what_it_received() -> None:
    # On a fake clock the 5 s bound passes in no real time: a stuck run fails fast.
    async def main() -> None:
        async with icefloe.testing.open(create(Node(chat, name="chat").to())) as t:
            run = await t.start("go")
            with pytest.raises(
                AssertionError,
                match=r"did not end within 5.0 s; it received 1 chunks, the last seq 0 'ask> '",
            ):
                await run.wait()
            with pytest.raises(AssertionError, match=r"3 chunks did not arrive within 5\.0 s"):
                await run.wait_for(3)
            assert run.terminal is None

    FakeClock().run(main())


@pytest.mark.timeout(30)
async def test_wait_for_more_chunks_than_the_run_sent_says_so() -> None:
    async with icefloe.testing.open(create(Node(echo, name="echo").to())) as t:
        run = await t.start("a")
        with pytest.raises(AssertionError, match="ended before sending 10 chunks"):
            await run.wait_for(10)


@pytest.mark.timeout(30)
async def test_leaving_cancels_runs_still_going_and_stops_the_flow() -> None:
    flow = create(Node(chat, name="chat").to())
    async with icefloe.testing.open(flow) as t:
        run = await t.start("go")
        await run.wait_for(1)
        tasks = len(asyncio.all_tasks())
    assert run.terminal == "cancelled"
    assert not flow.running
    assert flow.stats().streams.active == 0
    assert len(asyncio.all_tasks()) < tasks  # the harness's reader and the flow's workers


@pytest.mark.timeout(30)
async def test_a_running_flow_is_left_running() -> None:
    async with create(Node(echo, name="echo").to()) as flow:
        async with icefloe.testing.open(flow) as t:
            assert await (await t.start("x")).text() == "you said: x "
        assert flow.running


@pytest.mark.timeout(30)
async def test_bad_arguments_are_refused_clearly() -> None:
    flow = create(Node(echo, name="echo").to())
    with pytest.raises(ValueError, match="timeout_s must be finite seconds > 0, got 0"):
        async with icefloe.testing.open(flow, timeout_s=0):
            pass
    async with icefloe.testing.open(flow):
        pass
    with pytest.raises(InvalidState, match="stopped"):
        async with icefloe.testing.open(flow):
            pass


@pytest.mark.timeout(30)
async def test_start_message_and_to_route_a_prepared_message() -> None:
    shout = Node(echo, name="shout")
    whisper = Node(echo, name="whisper")
    async with icefloe.testing.open(create(shout.to(), whisper.to())) as t:
        message = Message(payload="x", headers=Headers(tenant="t"))
        run = await t.start_message(message, to=whisper)
        assert run.stream_id == message.trace_id
        assert await run.text() == "you said: x "
