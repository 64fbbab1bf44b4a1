"""Adaptive node inboxes: a slow node shrinks its inbox's window, a fast one regrows it.

Two levels. The channel tests drive an ``AdaptiveChannel`` on a fake
monotonic clock (the consumer advances it per take), so they are exact and
need no real time. The flow test runs a real pipeline whose middle node
sleeps while "slow": while slow, a message waits at least one sleep (8 ms)
per message ahead, over the 5 ms target however the machine schedules; while
fast, the window regrows even if a hiccup cuts it once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from icefloe import Context, Flow, Headers, Limits, Message, Node
from icefloe.core.flowwindow import FlowWindowPolicy
from icefloe.exceptions import WouldBlock
from icefloe.runtime import channel as channel_module
from icefloe.runtime.channel import AdaptiveChannel, Channel

MakeFlow = Callable[..., Flow]

CEILING = 16
FLOOR = 2
POLICY = FlowWindowPolicy(target_latency_s=0.005, floor=FLOOR, increase=2.0)
SLOW_S = 0.008


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(channel_module, "monotonic", fake)
    return fake


def _window(ch: Channel[int]) -> int:
    stats = ch.window_statistics()
    assert stats is not None
    assert FLOOR <= stats.window <= CEILING
    assert stats.window == ch.capacity
    return stats.window


async def test_channel_window_follows_the_consumer(clock: FakeClock) -> None:
    ch: AdaptiveChannel[int] = AdaptiveChannel(CEILING, POLICY)
    period = [SLOW_S]
    received: list[int] = []
    windows: list[int] = []
    max_depth = 0
    stop = asyncio.Event()

    async def produce() -> int:
        i = 0
        while not stop.is_set():
            await ch.send(i)
            i += 1
        return i

    async def consume(count: int) -> None:
        nonlocal max_depth
        for _ in range(count):
            max_depth = max(max_depth, len(ch))
            received.append(await ch.receive())
            clock.now += period[0]
            windows.append(_window(ch))
            await asyncio.sleep(0)

    async with asyncio.timeout(10):
        producer = asyncio.create_task(produce())
        await consume(200)
        assert windows[-1] == FLOOR  # 8 ms per item against a 5 ms target
        stats = ch.window_statistics()
        assert stats is not None
        assert stats.decreases >= 3
        assert max(windows[-50:]) == FLOOR  # it stays there while the consumer is slow
        assert max_depth <= CEILING  # never beyond the configured maxsize
        period[0] = 1e-6
        await consume(400)
        assert windows[-1] == CEILING  # a fast consumer grows it back, no further
        stats = ch.window_statistics()
        assert stats is not None
        assert stats.increases >= 7
        stop.set()
        while not producer.done():
            received.append(await ch.receive())
        sent = await producer
    received.extend(ch.clear())
    assert received == list(range(sent))  # every item once, in order


async def test_depth_stays_within_the_shrunken_window(clock: FakeClock) -> None:
    ch: AdaptiveChannel[int] = AdaptiveChannel(CEILING, POLICY)
    received: list[int] = []
    senders = [asyncio.create_task(_send_all(ch, k)) for k in range(3)]
    async with asyncio.timeout(10):
        for _ in range(150):
            received.append(await ch.receive())
            clock.now += SLOW_S
            await asyncio.sleep(0)
        assert ch.capacity == FLOOR
        for _ in range(20):
            # Three senders wait, yet the depth stays at the window.
            assert len(ch) <= FLOOR
            assert ch.statistics().waiting_senders >= 1
            received.append(await ch.receive())
            clock.now += SLOW_S
            await asyncio.sleep(0)
        with pytest.raises(WouldBlock):
            ch.send_nowait(-1)  # full at the window, though under maxsize
        assert len(ch) < ch.maxsize
        while not all(t.done() for t in senders):
            received.append(await ch.receive())
            clock.now += 1e-6
            await asyncio.sleep(0)
    received.extend(ch.clear())
    for k in range(3):  # each sender's items arrive once, in its order
        assert [i for i in received if i // 1000 == k] == list(range(k * 1000, k * 1000 + 300))


async def _send_all(ch: Channel[int], k: int) -> None:
    for i in range(300):
        await ch.send(k * 1000 + i)


def test_fixed_channel_has_no_window() -> None:
    ch: Channel[int] = Channel(4)
    assert ch.window_statistics() is None
    assert ch.capacity == 4


def test_inbox_window_must_be_a_policy() -> None:
    with pytest.raises(ValueError, match="inbox_window"):
        Limits(inbox_window=8)  # type: ignore[arg-type]
    assert Limits().inbox_window is None


# -- end to end ------------------------------------------------------------------


def _pipeline(make_flow: MakeFlow, slow: list[bool], stop: asyncio.Event, seen: list[int]) -> Flow:
    async def source(msg: Message, ctx: Context) -> None:
        while not stop.is_set():
            await ctx.emit_chunk(parent=msg, text="t")
        await ctx.emit_chunk(parent=msg, text="", done=True)

    async def relay(msg: Message, ctx: Context) -> None:
        ch = msg.payload
        seen.append(ch.seq)
        if slow[0]:
            await asyncio.sleep(SLOW_S)
        await ctx.emit_chunk(parent=msg, seq=ch.seq, text=ch.text, done=ch.done)

    a = Node(source, name="a")
    b = Node(relay, name="b")
    limits = Limits(inbox_window=POLICY)
    return make_flow(a.to(b), b.to(), queue_maxsize=CEILING, limits=limits)


def _inbox(flow: Flow, name: str) -> tuple[int, int]:
    """(window, used) of ``name``'s inbox, checking the bounds."""
    stats = flow.stats()
    node = next(n for n in stats.nodes if n.name == name)
    window = stats.inbox_windows[name].window
    assert FLOOR <= window <= CEILING
    assert node.queue.used <= node.queue.maxsize == CEILING
    return window, node.queue.used


async def test_slow_node_shrinks_its_inbox_and_a_fast_one_regrows_it(make_flow: MakeFlow) -> None:
    slow = [True]
    stop = asyncio.Event()
    seen: list[int] = []
    flow = _pipeline(make_flow, slow, stop, seen)
    assert set(flow.stats().inbox_windows) == {"b"}  # entry inboxes stay fixed (admission)
    chunks: list[int] = []
    async with asyncio.timeout(20):
        reader = flow.stream(Message(payload="go", headers=Headers(tenant="t")))
        async for chunk in reader:
            chunks.append(chunk.seq)
            if chunk.done:
                break
            window, used = _inbox(flow, "b")
            if slow[0] and window == FLOOR and used <= FLOOR:
                # Shrunken, not congested: fill still reads against maxsize.
                fill = flow.stats().queue_fill
                assert fill == used / CEILING < 0.5
                slow[0] = False
            elif not slow[0] and window == CEILING:
                stop.set()
    stats = flow.stats().inbox_windows["b"]
    assert stats.decreases >= 1
    assert stats.increases >= 1
    assert chunks == list(range(len(chunks)))
    assert seen == chunks  # the inbox delivered every message once, in order
