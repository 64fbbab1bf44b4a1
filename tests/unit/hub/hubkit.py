"""Helpers shared by the hub tests: waiting on conditions, draining subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from icefloe.exceptions import WouldBlock
from icefloe.hub import HubEvent, HubSubscription


async def until(predicate: Callable[[], bool], *, spins: int = 10_000) -> None:
    """Yield to the loop until ``predicate()`` holds; fail after ``spins`` turns."""
    for _ in range(spins):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def drain(sub: HubSubscription) -> list[HubEvent]:
    """Every event the subscription holds now, without waiting."""
    events: list[HubEvent] = []
    while True:
        try:
            events.append(sub.receive_nowait())
        except WouldBlock:
            return events
