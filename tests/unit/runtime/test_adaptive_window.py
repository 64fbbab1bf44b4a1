"""The adaptive stream window end to end: a slow reader shrinks it, a fast one regrows it.

The reader's slowness is real time (a sleep per chunk models a consumer's
work), so the limits are chosen to hold on a loaded machine: while slow, a
chunk waits at least one sleep (15 ms), over the 10 ms target whatever the
scheduling; while fast, the window regrows even if a hiccup cuts it once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from icefloe import Context, Flow, Headers, Limits, Message, Node, StreamClosedError, Subscription
from icefloe.core.flowwindow import FlowWindowPolicy
from icefloe.runtime.writer import StreamWriter

MakeFlow = Callable[..., Flow]

CEILING = 16
POLICY = FlowWindowPolicy(target_latency_s=0.01, floor=2, increase=2.0)
SLOW_S = 0.015


async def idle(msg: Message, ctx: Context) -> None:
    return None


def _flow(make_flow: MakeFlow, policy: FlowWindowPolicy | None = POLICY) -> Flow:
    limits = Limits(stream_buffer=CEILING, adaptive_window=policy)
    return make_flow(Node(idle, name="idle").to(), limits=limits)


async def _produce(writer: StreamWriter, stop: asyncio.Event) -> None:
    seq = 0
    try:
        while not stop.is_set():
            await writer.emit(str(seq))
            seq += 1
    except StreamClosedError:
        return  # the test failed and the flow stopped: its assertion says why
    await writer.close()


def _window(flow: Flow, sid: str) -> int | None:
    """The stream's adaptive window now (None: not sampled yet, or the stream is gone)."""
    stats = flow.lookup(sid)
    return None if stats is None or stats.window is None else stats.window.window


class _Checked:
    """Reads chunks, checking order, content and the memory held."""

    def __init__(self, flow: Flow, sid: str, reader: Subscription) -> None:
        self.flow, self.sid, self.reader = flow, sid, reader
        self.next_seq = 0
        self.max_held = 0

    async def read(self) -> None:
        chunk = await anext(self.reader)
        assert chunk.seq == self.next_seq
        assert chunk.text == ("" if chunk.done else str(chunk.seq))
        self.next_seq += 1
        stats = self.flow.lookup(self.sid)
        if stats is not None:  # None once the done chunk was read
            self.max_held = max(self.max_held, stats.buffered)


async def test_a_slow_reader_shrinks_the_window_and_a_fast_one_regrows_it(
    make_flow: MakeFlow,
) -> None:
    flow = _flow(make_flow)
    writer = flow.open_stream(Headers(tenant="acme"), stream_id="s")
    reader = flow.subscribe("s")
    checked = _Checked(flow, "s", reader)
    stop = asyncio.Event()
    producer = asyncio.create_task(_produce(writer, stop))
    async with asyncio.timeout(30):
        # Slow: every chunk waits longer than the target, so the window is cut
        # (once per round) down to its floor.
        while (_window(flow, "s") or CEILING) > POLICY.floor:
            await checked.read()
            await asyncio.sleep(SLOW_S)
            assert checked.next_seq < 200, "the window did not shrink"
        shrunk_at = checked.next_seq
        for _ in range(2):
            # The first reads drain what was held before the last cut.
            checked.max_held = 0
            for _ in range(4):
                await checked.read()
                await asyncio.sleep(SLOW_S)
        # Memory follows the window: a slow reader holds the floor, not the limit.
        assert checked.max_held <= POLICY.floor
        assert _window(flow, "s") == POLICY.floor
        # Fast: the reader keeps up, latency falls under the target, the window
        # grows back to the configured limit and no further.
        while (_window(flow, "s") or 0) < CEILING:
            await checked.read()
            assert checked.next_seq < shrunk_at + 100_000, "the window did not regrow"
        totals = flow.stats().windows
        stop.set()
        while True:
            try:
                await checked.read()
            except StopAsyncIteration:
                break
        await producer
    assert checked.max_held <= CEILING
    assert checked.next_seq == writer.next_seq  # every chunk once, the done one too
    assert totals.adaptive
    assert (totals.adapted, totals.window_sum, totals.window_min) == (1, CEILING, CEILING)
    assert totals.decreases >= 3  # 16 -> 8 -> 4 -> 2
    assert totals.increases >= 1


async def test_a_fixed_window_ignores_a_slow_reader(make_flow: MakeFlow) -> None:
    flow = _flow(make_flow, policy=None)
    writer = flow.open_stream(Headers(tenant="acme"), stream_id="s")
    reader = flow.subscribe("s")
    checked = _Checked(flow, "s", reader)
    stop = asyncio.Event()
    producer = asyncio.create_task(_produce(writer, stop))
    async with asyncio.timeout(30):
        for _ in range(6):
            await checked.read()
            await asyncio.sleep(SLOW_S)
            stats = flow.lookup("s")
            assert stats is not None
            assert stats.window is None
        stop.set()
        async for chunk in reader:
            assert chunk.seq == checked.next_seq
            checked.next_seq += 1
        await producer
    assert checked.max_held == CEILING - 1  # counted after each read
    assert not flow.stats().windows.adaptive


async def test_a_node_feeding_a_slow_flow_stream_gets_a_smaller_window(
    make_flow: MakeFlow,
) -> None:
    async def tokens(msg: Message, ctx: Context) -> None:
        for i in range(60):
            await ctx.emit_chunk(parent=msg, text=str(i))
        await ctx.emit_chunk(parent=msg, text="", done=True)

    limits = Limits(stream_buffer=CEILING, adaptive_window=POLICY)
    flow = make_flow(Node(tokens, name="tokens").to(), limits=limits)
    message = Message(payload="go", headers=Headers(tenant="acme"))
    seqs = []
    smallest = CEILING
    async with asyncio.timeout(30):
        async for chunk in flow.stream(message):
            seqs.append(chunk.seq)
            stats = flow.lookup(message.trace_id)
            if stats is not None and stats.window is not None:
                smallest = min(smallest, stats.window.window)
                assert stats.buffered <= CEILING
            await asyncio.sleep(SLOW_S / 2)
    assert seqs == list(range(61))
    assert smallest < CEILING


async def test_two_readers_the_window_follows_the_slow_one_and_both_get_everything(
    make_flow: MakeFlow,
) -> None:
    flow = _flow(make_flow)
    writer = flow.open_stream(Headers(tenant="acme"), stream_id="s")
    fast, slow = flow.subscribe("s"), flow.subscribe("s")
    total = 40

    async def produce() -> None:
        for i in range(total):
            await writer.emit(str(i))
        await writer.close()

    async def read(reader: Subscription, pause: float) -> list[int]:
        seqs = []
        async for chunk in reader:
            seqs.append(chunk.seq)
            if pause:
                await asyncio.sleep(pause)
        return seqs

    smallest = CEILING
    async with asyncio.timeout(30):
        producer = asyncio.create_task(produce())
        readers = asyncio.gather(read(fast, 0), read(slow, SLOW_S))
        while not producer.done():
            stats = flow.lookup("s")
            if stats is not None and stats.window is not None:
                smallest = min(smallest, stats.window.window)
            await asyncio.sleep(SLOW_S)
        got_fast, got_slow = await readers
        await producer
    assert got_fast == got_slow == list(range(total + 1))
    assert smallest < CEILING
