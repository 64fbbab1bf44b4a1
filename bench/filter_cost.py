"""Filter cost calibration and the costly-filter publish (issue 15, item 2).

Usage::

    python bench/filter_cost.py

Prints, for filters of several shapes, the cost :func:`icefloe.core.filters.filter_cost`
gives them and the measured nanoseconds per cost unit of one evaluation over an
event none of them selects (the worst case: no short-circuit). Roughly equal
figures mean the cost tracks evaluation time whatever the shape.

Then the attack shape of issue 15, scaled: subscribers of pattern ``>`` whose
filters each hold 34 comparisons on ``data.a.a.a.a.a.a.a.a``, and the wall
time of one ``hub.publish`` to them, with the hub's default limits (which
refuse most of them) and with the subscriber and filter-cost limits off.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from icefloe.core.filters import compile_filter
from icefloe.exceptions import StreamError
from icefloe.hub import Hub, HubLimits, HubSubscription

PATH = "data." + ".".join(["a"] * 8)
DEEP: dict[str, Any] = {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": -999}}}}}}}}

SHAPES = {
    "one comparison on topic": 'topic == "x"',
    "one comparison on data.final": "data.final == true",
    "an in list on a header": 'headers.lang in ["en", "fr", "de"]',
    "4 comparisons, and/or": 'data.k == "a" and (data.s > 5 or data.t prefix "z") '
    "and not data.f == true",
    "34 comparisons on an 8-deep path": " or ".join(f"{PATH} == {i}" for i in range(34)),
}


class _Event:
    topic = "t.x"
    tenant = "a"
    headers: ClassVar[dict[str, str]] = {"lang": "xx"}
    data = DEEP


def attack_filter(k: int) -> str:
    """A 34-comparison filter of about 1,006 characters, distinct for each ``k``."""
    return " or ".join([f"{PATH} == {i}" for i in range(33)] + [f"{PATH} == {-1 - k}"])


def calibrate(rounds: int = 20_000) -> None:
    event = _Event()
    for name, source in SHAPES.items():
        flt = compile_filter(source)
        predicate = flt.predicate
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter_ns()
            for _ in range(rounds):
                predicate(event)
            best = min(best, (time.perf_counter_ns() - started) / rounds)
        print(f"{name:36} cost {flt.cost:4}  {best:7.0f} ns  {best / flt.cost:5.1f} ns/unit")


async def publish_ms(limits: HubLimits, count: int, distinct: bool) -> tuple[int, float]:
    """Subscribers admitted of ``count`` asked, and the best time of one publish, ms."""
    async with Hub(limits) as hub:
        subs: list[HubSubscription] = []
        for k in range(count):
            source = attack_filter(k if distinct else 0)
            try:
                subs.append(hub.subscribe(">", tenant="a", filter=source))
            except StreamError:
                continue  # refused: the limits at work
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            await hub.publish("t.x", DEEP, tenant="a")
            best = min(best, time.perf_counter() - started)
        for sub in subs:
            sub.close()
        return len(subs), best * 1000


def main() -> None:
    calibrate()
    off = HubLimits(
        max_subscribers=None, max_subscribers_per_tenant=None, max_filter_cost_per_tenant=None
    )
    for label, limits in (("limits off", off), ("defaults", HubLimits())):
        for distinct in (False, True):
            admitted, ms = asyncio.run(publish_ms(limits, 10_000, distinct))
            kind = "distinct" if distinct else "identical"
            print(f"{label:10} 10,000 {kind:9} filters asked, {admitted:5} admitted: {ms:7.2f} ms")


if __name__ == "__main__":
    main()
