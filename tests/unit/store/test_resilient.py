"""ResilientStore: timeouts, retries with backoff and a budget, the circuit breaker."""

from __future__ import annotations

import asyncio

import pytest

from icefloe.core.breaker import BreakerPolicy, BreakerState
from icefloe.store import MemoryStore, StoreUnavailable, Terminal
from icefloe.store.faults import Fault, FaultyStore
from icefloe.store.resilient import ResilientStore, RetryPolicy
from storecheck import chunks, run_record


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """Records the backoffs instead of waiting them."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _wrap(
    faulty: FaultyStore,
    *,
    attempts: int = 3,
    threshold: int = 5,
    budget: float = 20.0,
    timeout_s: float = 5.0,
) -> tuple[ResilientStore, Clock, Sleeps]:
    clock, sleeps = Clock(), Sleeps()
    store = ResilientStore(
        faulty,
        timeout_s=timeout_s,
        retry=RetryPolicy(attempts, 0.1, 0.3, budget_per_s=0.001, budget_burst=budget),
        breaker=BreakerPolicy(threshold, 10.0, 1),
        clock=clock,
        sleep=sleeps,
    )
    return store, clock, sleeps


async def test_a_transient_failure_is_retried_with_growing_jittered_backoff() -> None:
    faulty = FaultyStore(MemoryStore())
    store, _, sleeps = _wrap(faulty, attempts=4)
    await store.create_run(run_record("s"))
    faulty.inject("append", Fault.fail(times=3))
    assert await store.append("s", chunks(0, 2)) == 3
    stats = store.statistics()
    assert (stats.retries, stats.failures) == (3, 3)
    assert len(sleeps.waits) == 3
    for wait, ceiling in zip(sleeps.waits, (0.1, 0.2, 0.3), strict=True):
        assert 0.0 <= wait <= ceiling


async def test_the_last_failure_is_raised_when_attempts_run_out() -> None:
    faulty = FaultyStore(MemoryStore())
    store, _, _ = _wrap(faulty, attempts=2)
    faulty.inject("read", Fault.fail(StoreUnavailable("disk gone")))
    with pytest.raises(StoreUnavailable, match="disk gone"):
        await store.read("s", 0, 10)
    assert faulty.hits("read") == 2


async def test_a_slow_call_times_out_and_is_retried() -> None:
    faulty = FaultyStore(MemoryStore())
    store, _, _ = _wrap(faulty, timeout_s=0.05)
    faulty.inject("get_run", Fault.hang(times=1))
    assert await asyncio.wait_for(store.get_run("missing"), 10) is None
    assert store.statistics().timeouts == 1


async def test_caller_errors_are_answers_not_failures() -> None:
    faulty = FaultyStore(MemoryStore())
    store, _, _ = _wrap(faulty, threshold=1)
    await store.create_run(run_record("s"))
    with pytest.raises(ValueError, match="gap"):
        await store.append("s", chunks(5, 5))
    with pytest.raises(KeyError):
        await store.end_run("missing", Terminal("done", None, "", 1.0))
    assert faulty.hits("append") == 1
    assert store.unavailable_reason() is None


async def test_an_outage_opens_the_breaker_then_a_probe_closes_it() -> None:
    faulty = FaultyStore(MemoryStore())
    store, clock, _ = _wrap(faulty, attempts=1, threshold=3)
    faulty.inject("*", Fault.fail(StoreUnavailable("connection refused")))
    for _ in range(3):
        with pytest.raises(StoreUnavailable, match="refused"):
            await store.get_run("s")
    reason = store.unavailable_reason()
    assert reason is not None
    assert "3 calls failed in a row" in reason
    assert "connection refused" in reason
    assert "next try in 10.0 s" in reason
    with pytest.raises(StoreUnavailable, match="is unavailable: 3 calls failed"):
        await store.get_run("s")
    assert faulty.hits("get_run") == 3  # the fourth call never reached the store
    faulty.clear()
    clock.now += 10.0
    assert await store.get_run("s") is None  # the probe
    assert store.unavailable_reason() is None
    assert store.statistics().breaker.state is BreakerState.CLOSED
    assert store.statistics().rejected == 1


async def test_the_retry_budget_caps_retries_across_calls() -> None:
    faulty = FaultyStore(MemoryStore())
    store, _, _ = _wrap(faulty, attempts=10, threshold=1000, budget=3.0)
    faulty.inject("*", Fault.fail())
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            await store.get_session("w")
    stats = store.statistics()
    assert stats.retries == 3
    assert stats.budget_exhausted == 3
    assert faulty.hits("get_session") == 6  # 3 first tries + 3 budgeted retries


async def test_a_create_that_committed_before_failing_is_recognised_on_retry() -> None:
    faulty = FaultyStore(MemoryStore())
    store, _, _ = _wrap(faulty)
    faulty.inject("after_create_run", Fault.fail(times=1))
    assert await store.create_run(run_record("s")) == "s"
    with pytest.raises(ValueError, match="exists already"):
        await store.create_run(run_record("s"))  # a genuine duplicate still fails


async def test_a_retried_end_run_keeps_the_first_terminal() -> None:
    faulty = FaultyStore(MemoryStore())
    store, _, _ = _wrap(faulty)
    await store.create_run(run_record("s"))
    faulty.inject("after_end_run", Fault.fail(times=1))
    first = Terminal("failed", "interrupted", "restart", 5.0)
    assert await store.end_run("s", first) is False  # the retry finds it ended
    state = await store.get_run("s")
    assert state is not None
    assert state.terminal == first


async def test_a_cancelled_probe_does_not_wedge_the_breaker() -> None:
    faulty = FaultyStore(MemoryStore())
    store, clock, _ = _wrap(faulty, attempts=1, threshold=1)
    faulty.inject("get_run", Fault.fail(times=1))
    with pytest.raises(StoreUnavailable):
        await store.get_run("s")
    clock.now += 10.0
    faulty.inject("get_run", Fault.hang(times=1))
    probe = asyncio.create_task(store.get_run("s"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert await asyncio.wait_for(store.get_run("s"), 5) is None


async def test_statistics_include_the_inner_stores() -> None:
    store, _, _ = _wrap(FaultyStore(MemoryStore()))
    await store.create_run(run_record("s"))
    await store.append("s", chunks(0, 4))
    stats = store.statistics()
    assert stats.calls == 2
    assert stats.inner.chunks_written == 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout_s": 0.0}, "timeout_s"),
        ({"retry": RetryPolicy(attempts=0)}, "attempts"),
        ({"retry": RetryPolicy(max_delay_s=float("nan"))}, "max_delay_s"),
        ({"breaker": BreakerPolicy(failure_threshold=0)}, "failure_threshold"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ResilientStore(MemoryStore(), **kwargs)  # type: ignore[arg-type]
