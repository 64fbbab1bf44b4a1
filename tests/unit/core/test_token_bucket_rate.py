"""Rate properties of icefloe.core.token_bucket.TokenBucket over simulated time.

The existing tests cover a greedy taker of one fixed size. Here takers vary
the size of each request and pause at random between requests, and wait the
way the runtime does (``time_until`` then ``try_take``): over a run long
compared to ``burst / rate`` the admitted rate is within 2% of ``rate``, and
under any pattern at all the bucket never admits more than
``burst + rate * elapsed``.
"""

from __future__ import annotations

import random

from bucketkit import bucket_on_clock, bucket_property, patterns, requests
from hypothesis import strategies as st


def run_waiting_taker(
    rate: float, burst: float, start: float, seed: int, horizon_bursts: float = 100.0
) -> tuple[float, float]:
    """Take random sizes with random pauses, waiting when refused.

    Sizes are uniform in [burst / 20, burst]. Pauses are at most half the
    smallest size's refill time, so the taker asks faster than the bucket
    refills and the bucket can overflow (losing refill) only before the
    first take. Returns (admitted, elapsed).
    """
    clock, bucket = bucket_on_clock(rate, burst, start)
    rng = random.Random(seed)
    smallest = burst / 20
    max_pause = smallest / (2 * rate)
    horizon = horizon_bursts * burst / rate
    admitted = 0.0
    while clock.now - start < horizon:
        n = rng.uniform(smallest, burst)
        if not bucket.try_take(n):
            wait = bucket.time_until(n)
            assert wait > 0.0
            clock.advance(wait)
            assert bucket.try_take(n), "waiting time_until(n) must suffice"
        admitted += n
        clock.advance(rng.uniform(0.0, max_pause))
    return admitted, clock.now - start


def test_acceptance_admitted_rate_within_two_percent() -> None:
    """1,000 tokens/s with bursts of 50, one simulated minute, random takes."""
    admitted, elapsed = run_waiting_taker(
        rate=1000.0, burst=50.0, start=0.0, seed=6, horizon_bursts=1200
    )
    assert elapsed >= 60.0
    assert abs(admitted / elapsed - 1000.0) <= 0.02 * 1000.0


@bucket_property(seed=st.integers(0, 2**32))
def test_admitted_rate_within_two_percent_of_rate(
    rate: float, burst: float, start: float, seed: int
) -> None:
    admitted, elapsed = run_waiting_taker(rate, burst, start, seed)
    assert abs(admitted / elapsed - rate) <= 0.02 * rate


_patterns = patterns(largest=1.0, max_size=300)


@bucket_property(pattern=_patterns)
def test_never_admits_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: float, start: float, pattern: list[tuple[float, float]]
) -> None:
    clock, bucket = bucket_on_clock(rate, burst, start)
    admitted = 0.0
    for n in requests(pattern, clock, rate, burst):
        if bucket.try_take(n):
            admitted += n
        elapsed = clock.now - start
        # The slack for float rounding the bucket documents: 1e-9 of the burst per take.
        assert admitted <= burst + rate * elapsed + 1e-9 * burst * len(pattern) + 1e-6 * burst
        assert bucket.statistics().admitted == admitted
