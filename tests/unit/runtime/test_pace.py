"""throttle.pace: the one asyncio waiter for the core TokenBucket."""

from __future__ import annotations

import asyncio

import pytest

from icefloe.core.token_bucket import TokenBucket
from icefloe.runtime.throttle import pace


class FakeClock:
    """Frozen unless a test moves it: the bucket's answers depend on charges only."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_fast_path_does_not_wait() -> None:
    bucket = TokenBucket(1_000.0, 100.0, FakeClock())
    assert await pace(bucket, 60) == 0.0
    assert bucket.tokens == pytest.approx(40.0)


async def test_pacers_wait_in_the_order_they_called_and_pay_oversize_requests_in_full() -> None:
    bucket = TokenBucket(1_000.0, 10.0, FakeClock())
    async with asyncio.timeout(5):
        waits = await asyncio.gather(pace(bucket, 50), pace(bucket, 10), pace(bucket, 5))
    # 50 bytes on a 10-byte burst: 40 owed (0.04 s); the next pays behind it.
    assert waits == pytest.approx([0.04, 0.05, 0.055])
    assert bucket.tokens == pytest.approx(-55.0)  # the frozen clock refilled nothing


async def test_a_cancelled_pacer_gives_its_tokens_back() -> None:
    bucket = TokenBucket(1.0, 10.0, FakeClock())
    async with asyncio.timeout(5):
        waiting = asyncio.ensure_future(pace(bucket, 30))  # 20 s of debt
        await asyncio.sleep(0)
        assert bucket.tokens == pytest.approx(-20.0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert bucket.tokens == pytest.approx(10.0)
