"""Shared by the TokenBucket tests: simulated-time property inputs, a bucket on a fake clock.

Importable as ``bucketkit``: pytest puts this folder on sys.path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fakeclock import FakeClock
from icefloe.core.token_bucket import TokenBucket

__all__ = [
    "BURSTS",
    "PROPERTY",
    "RATES",
    "STARTS",
    "FakeClock",
    "bucket_on_clock",
    "bucket_property",
    "patterns",
    "requests",
]

#: the hypothesis settings of the rate and debt properties
PROPERTY = settings(max_examples=100, deadline=None)
#: tokens per second, from one every 100 s to a million a second
RATES = st.floats(0.01, 1e6)
#: bucket sizes, from half a token to 10,000
BURSTS = st.floats(0.5, 1e4)
#: where the clock starts (the bucket must not care)
STARTS = st.floats(0.0, 1e6)


def patterns(largest: float, max_size: int) -> st.SearchStrategy[list[tuple[float, float]]]:
    """Request patterns: ``(size / burst, pause * rate / burst)`` pairs, sizes up to
    ``largest`` bursts and pauses up to five refills of the burst."""
    return st.lists(
        st.tuples(st.floats(0.0, largest), st.floats(0.0, 5.0)), min_size=1, max_size=max_size
    )


def requests(
    pattern: list[tuple[float, float]], clock: FakeClock, rate: float, burst: float
) -> Iterator[float]:
    """Each request's size in tokens, once its pause has passed on ``clock``."""
    for size, pause in pattern:
        clock.advance(pause * burst / rate)
        yield size * burst


def bucket_on_clock(rate: float, burst: float, start: float = 0.0) -> tuple[FakeClock, TokenBucket]:
    """A full bucket and the fake clock it reads, starting at ``start``."""
    clock = FakeClock(start)
    return clock, TokenBucket(rate=rate, burst=burst, clock=clock)


def bucket_property(
    **strategies: st.SearchStrategy[Any],
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A :data:`PROPERTY` over any ``rate``, ``burst`` and ``start``, and ``strategies``."""

    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        return PROPERTY(given(rate=RATES, burst=BURSTS, start=STARTS, **strategies)(test))

    return decorate
