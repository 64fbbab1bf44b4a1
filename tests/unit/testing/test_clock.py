"""FakeClock: loop time that jumps to the next timer when the loop is idle,
moves by advance(), and drives the runtime's own timers (deadlines)."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

import icefloe.testing
from icefloe import Context, ErrorCode, Message, Node, create
from icefloe.testing import FakeClock, VirtualTimeLoop, current_clock


def test_sleep_jumps_to_its_timer_in_no_real_time() -> None:
    clock = FakeClock(start=100.0)

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        assert current_clock() is clock
        await asyncio.sleep(3600)
        woke = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.Event().wait()
        return woke, loop.time()

    started = time.perf_counter()
    assert clock.run(main()) == (3700.0, 3730.0)
    assert time.perf_counter() - started < 5  # an hour and a half-minute, virtually
    assert clock.monotonic() == 3730.0
    assert clock.jumps == 2
    assert clock.jumped_s == 3630.0


def test_timers_fire_in_order_of_their_virtual_times() -> None:
    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def nap(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        woke.append((name, asyncio.get_running_loop().time()))

    async def main() -> None:
        await asyncio.gather(nap("c", 3), nap("a", 1), nap("b", 2))

    clock.run(main())
    assert woke == [("a", 1.0), ("b", 2.0), ("c", 3.0)]


def test_advance_moves_time_and_due_timers_run_on_the_next_turn() -> None:
    clock = FakeClock()

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        loop.call_later(10, lambda: fired.append(loop.time()))
        clock.advance(9.5)
        await asyncio.sleep(0)
        assert fired == []
        clock.advance(0.5)
        await asyncio.sleep(0)
        return fired

    assert clock.run(main()) == [10.0]
    assert clock.jumps == 0


def test_a_thread_is_outrun_at_threshold_0_and_not_with_a_longer_one() -> None:
    # Waiting on a thread looks idle to the loop: with threshold 0 the clock jumps
    # to the timeout ahead of the thread; with a threshold longer than the
    # thread's (real) work, the thread's wake-up comes first.
    async def main(work_s: float) -> str:
        gate = threading.Event()
        try:
            async with asyncio.timeout(60):
                await asyncio.to_thread(gate.wait, work_s)
                return "done"
        except TimeoutError:
            return "timed out"
        finally:
            gate.set()  # never leave the thread behind

    hasty = FakeClock()
    assert hasty.run(main(5.0)) == "timed out"
    assert hasty.monotonic() == 60.0
    patient = FakeClock(autojump_threshold=5.0)
    assert patient.run(main(0.05)) == "done"
    assert patient.monotonic() < 60


def test_no_clock_outside_a_virtual_loop() -> None:
    async def main() -> FakeClock | None:
        return current_clock()

    assert asyncio.run(main()) is None
    loop = FakeClock().new_event_loop()
    assert isinstance(loop, VirtualTimeLoop)
    loop.close()


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_values_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="autojump_threshold must be finite seconds >= 0"):
        FakeClock(autojump_threshold=bad)
    with pytest.raises(ValueError, match="seconds must be finite and >= 0"):
        FakeClock().advance(bad)
    if bad != -1.0:
        with pytest.raises(ValueError, match="start must be a finite number"):
            FakeClock(start=bad)


async def slow_model(msg: Message, ctx: Context) -> None:
    await ctx.emit_chunk(parent=msg, text="thinking")
    await asyncio.sleep(120)  # a model that hangs for two minutes
    await ctx.emit_chunk(parent=msg, text="", done=True)


def test_a_node_sleeping_minutes_runs_in_no_real_time() -> None:
    clock = FakeClock()

    async def main() -> str:
        async with icefloe.testing.open(
            create(Node(slow_model, name="m").to()), timeout_s=300
        ) as t:
            assert t.clock is clock
            return await (await t.start("q")).text()

    started = time.perf_counter()
    assert clock.run(main()) == "thinking"
    assert time.perf_counter() - started < 10
    assert clock.monotonic() >= 120


def test_a_message_deadline_expires_on_the_fake_clock() -> None:
    # deadline_s is wall-clock; the timer enforcing it runs on loop time.
    clock = FakeClock()

    async def main() -> tuple[str | None, float]:
        async with icefloe.testing.open(
            create(Node(slow_model, name="m").to()), timeout_s=300
        ) as t:
            run = await t.start("q", deadline_s=time.time() + 30)
            await run.wait()
            return run.terminal, asyncio.get_running_loop().time()

    terminal, at = clock.run(main())
    assert terminal == ErrorCode.TIMEOUT
    assert 29 <= at < 120
