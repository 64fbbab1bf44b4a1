"""Calls to an engine that may be away for a while: retried with backoff, within a budget.

redis-py reconnects on the next command after a connection is lost, so a
retry is a reconnect. :func:`retrying` runs a call until it answers, waiting
:func:`backoff_s` between tries (capped exponential, jittered, so that many
loops of many gateways do not hit a restarting Redis in step) and giving up
after :data:`RETRY_BUDGET_S`: an outage shorter than that costs a pause, no
chunk; a longer one ends what the call served with ``unavailable``, as the
backplane did before (docs/deploy.md, "Engine outage").
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

__all__ = [
    "RETRY_BASE_S",
    "RETRY_BUDGET_S",
    "RETRY_CAP_S",
    "backoff_s",
    "engine_errors",
    "retrying",
]

T = TypeVar("T")

#: the first wait after a failure, seconds
RETRY_BASE_S: Final = 0.05
#: the longest wait between two tries, seconds
RETRY_CAP_S: Final = 2.0
#: seconds a call keeps trying before its failure is final; under the 30 s a
#: running stream's keys outlive their last refresh, so a stream survives an
#: outage its calls survive
RETRY_BUDGET_S: Final = 20.0


def backoff_s(
    attempt: int,
    *,
    base_s: float = RETRY_BASE_S,
    cap_s: float = RETRY_CAP_S,
    draw: Callable[[], float] = random.random,
) -> float:
    """The wait before try ``attempt + 1``: in [d/2, d], d = base·2^attempt up to ``cap_s``."""
    ceiling = min(cap_s, base_s * (1 << min(attempt, 30)))
    return ceiling / 2 + draw() * ceiling / 2


def engine_errors() -> tuple[type[BaseException], ...]:
    """The errors that say the engine is away (not that a command was wrong)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


async def retrying(call: Callable[[], Awaitable[T]], *, budget_s: float = RETRY_BUDGET_S) -> T:
    """``await call()`` until it answers; the engine's errors are retried with
    backoff for ``budget_s``, then raised (any other error at once)."""
    errors = engine_errors()
    deadline = time.monotonic() + budget_s
    attempt = 0
    while True:
        try:
            return await call()
        except errors:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(backoff_s(attempt))
        attempt += 1
