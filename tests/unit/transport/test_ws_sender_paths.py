"""WsSender without a server: pacing outside the write lock, failures, counters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from icefloe.core.codec import Format
from icefloe.core.token_bucket import TokenBucket
from icefloe.core.wire_errors import CloseReason, close_frame
from icefloe.transport.ws_sender import WsSender


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Wire:
    """An ASGI ``send`` that records messages, or raises ``fail`` when set."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.fail: BaseException | None = None

    async def __call__(self, message: dict[str, Any]) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(message["bytes"])


def make_sender(
    wire: Wire, cuts: list[CloseReason], *, bytes_per_s: float | None = None, burst: int = 1000
) -> WsSender:
    return WsSender(
        wire,
        Format.MSGPACK,
        compress=False,
        send_timeout_s=5.0,
        cut=cuts.append,
        quantum_bytes=1024,
        stream_queue_bytes=32 * 1024,
        batch_bytes=16 * 1024,
        bytes_per_s=bytes_per_s,
        burst_bytes=burst,
        weight=lambda priority: 2.0**priority,
    )


# -- the connection budget: the core TokenBucket, charged ahead ----------------------


def test_a_budget_that_is_waited_for_never_exceeds_burst_plus_rate_times_elapsed() -> None:
    clock = FakeClock()
    began = clock.now
    budget = TokenBucket(1000, 500, clock)
    sent = 0
    for size in [300, 300, 2000, 1, 700, 50, 50, 4000, 10]:  # some over the burst
        clock.now += budget.charge(size)  # wait as long as told, then send
        sent += size
        assert sent <= 500 + 1000 * (clock.now - began) + 1e-6
    # ...and it does not wait needlessly: the total took exactly what the rate says.
    assert clock.now - began == pytest.approx((sent - 500) / 1000)


def test_a_budget_gives_back_and_never_holds_more_than_its_burst() -> None:
    clock = FakeClock()
    budget = TokenBucket(100, 1000, clock)
    assert budget.charge(1500) == pytest.approx(5.0)  # overdrawn by 500 at 100/s
    assert budget.charge(-2000) == 0.0
    assert budget.tokens == 1000  # capped
    clock.now += 60
    assert budget.tokens == 1000
    with pytest.raises(ValueError):
        TokenBucket(0, 10, clock)


# -- pacing happens outside the write lock ------------------------------------------------


async def test_a_control_op_does_not_wait_for_a_paced_run() -> None:
    wire, cuts = Wire(), []
    sender = make_sender(wire, cuts, bytes_per_s=1000, burst=1000)
    sender.add_stream("a", 0)
    await sender.send(b"w" * 3000)  # a control op: charged (overdrawn by 2000), never paced
    assert sender.push_chunks("a", [b"x" * 400] * 3)
    draining = asyncio.ensure_future(sender.drain())
    await asyncio.sleep(0)  # one step: the run is taken and waits ~3 s for the limit
    assert not draining.done()
    try:
        async with asyncio.timeout(1.0):  # held behind the run, it would wait ~3 s
            await sender.send(b"pong")
        assert wire.sent == [b"w" * 3000, b"pong"]
        assert not draining.done()  # the run is still paced
    finally:
        draining.cancel()
        await asyncio.wait([draining])
        await sender.aclose()
    assert cuts == []


# -- failures: drain and the writer handle them alike --------------------------------------


async def test_a_bug_in_drain_cuts_the_connection_as_the_writer_does() -> None:
    wire, cuts = Wire(), []
    sender = make_sender(wire, cuts)
    sender.add_stream("a", 0)
    assert sender.push_chunks("a", [b"x" * 10, b"y" * 10])
    wire.fail = ValueError("a bug")
    with pytest.raises(ConnectionResetError):
        await sender.drain()
    assert cuts == [CloseReason.INTERNAL]
    with pytest.raises(ConnectionResetError):  # the pumps stop
        sender.push_chunks("a", [b"z"])
    assert sender.statistics().chunks == 0  # nothing was sent
    await sender.aclose()


async def test_a_bug_in_the_writer_cuts_the_connection() -> None:
    wire, cuts = Wire(), []
    sender = make_sender(wire, cuts)
    sender.add_stream("a", 0)
    wire.fail = ValueError("a bug")
    sender.push_tail("a", b"error")  # the writer task sends it
    async with asyncio.timeout(5):
        while not cuts:  # until the writer task hit the bug and cut
            await asyncio.sleep(0)
    assert cuts == [CloseReason.INTERNAL]
    with pytest.raises(ConnectionResetError):  # the pumps stop
        sender.push_chunks("a", [b"z"])
    await sender.aclose()


async def test_a_send_past_the_timeout_cuts_a_slow_consumer() -> None:
    cuts: list[CloseReason] = []
    stuck: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def never(message: dict[str, Any]) -> None:
        await stuck  # the client stopped reading: the write never completes

    sender = WsSender(
        never,
        Format.MSGPACK,
        compress=False,
        send_timeout_s=0.05,
        cut=cuts.append,
        quantum_bytes=1024,
        stream_queue_bytes=32 * 1024,
        batch_bytes=16 * 1024,
        bytes_per_s=None,
        burst_bytes=1000,
        weight=lambda priority: 2.0**priority,
    )
    async with asyncio.timeout(5):
        with pytest.raises(TimeoutError):
            await sender.send(b"pong")
    assert cuts == [CloseReason.SLOW_CONSUMER]
    # The close the connection then sends, as docs/websocket.md says.
    assert close_frame(CloseReason.SLOW_CONSUMER) == (1008, "slow consumer")
    await sender.aclose()


# -- counters ---------------------------------------------------------------------------


async def test_chunks_count_only_once_written_and_tails_are_not_queued_chunks() -> None:
    wire, cuts = Wire(), []
    sender = make_sender(wire, cuts)
    sender.batch = True
    sender.add_stream("a", 0)
    sender.push_chunks("a", [b"x" * 10, b"y" * 10])
    sender.push_tail("a", b"error")
    stats = sender.statistics()
    assert (stats.queued_chunks, stats.queued_bytes, stats.chunks) == (2, 20, 0)
    wire.fail = OSError("gone")
    with pytest.raises(OSError):
        await sender.drain()
    stats = sender.statistics()
    assert (stats.chunks, stats.batches, stats.messages) == (0, 0, 0)
    assert cuts == []  # the peer is gone: nothing to cut
    await sender.aclose()


async def test_chunks_and_batches_are_counted_once_sent() -> None:
    wire, cuts = Wire(), []
    sender = make_sender(wire, cuts)
    sender.batch = True
    sender.add_stream("a", 0)
    assert sender.push_chunks("a", [b"\x81\xa1a\x01", b"\x81\xa1a\x02"])
    sender.push_tail("a", b"error")
    await sender.drain()
    stats = sender.statistics()
    assert (stats.chunks, stats.batches, stats.messages, stats.queued_chunks) == (2, 1, 2, 0)
    assert wire.sent[-1] == b"error"
    await sender.aclose()
