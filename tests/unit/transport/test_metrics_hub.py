"""/metrics shows the hub's totals and each dropping subscriber's drops."""

from __future__ import annotations

import re

from icefloe import Context, Flow, Message, Node, create
from icefloe.hub import Hub
from icefloe.transport.metrics import MAX_SUBSCRIBER_SERIES, EdgeMetrics


def idle_flow() -> Flow:
    async def idle(msg: Message, ctx: Context) -> None:
        pass

    return create(Node(idle, name="idle").to())


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if found == labels:
            return float(match[3])
    return None


async def test_drops_are_counted_per_subscriber_and_in_total() -> None:
    hub = Hub()
    try:
        slow = hub.subscribe("chat.>", tenant="acme", buffer=2, subscriber_id="slow")
        newest = hub.subscribe(
            "chat.>", tenant="acme", buffer=3, overflow="drop_newest", subscriber_id="picky"
        )
        quiet = hub.subscribe("chat.>", tenant="acme", buffer=64, subscriber_id="quiet")
        for n in range(10):
            await hub.publish("chat.room", {"n": n}, tenant="acme")
        text = EdgeMetrics(idle_flow(), hub).render().decode()
    finally:
        await hub.aclose()
    assert sample(text, "icefloe_hub_published_total") == 10
    assert sample(text, "icefloe_hub_subscribers") == 3
    assert sample(text, "icefloe_hub_dropped_total", policy="drop_oldest") == 8
    assert sample(text, "icefloe_hub_dropped_total", policy="drop_newest") == 7
    series = "icefloe_hub_subscriber_dropped_total"
    assert sample(text, series, tenant="acme", subscriber="slow", policy="drop_oldest") == 8
    assert sample(text, series, tenant="acme", subscriber="picky", policy="drop_newest") == 7
    # A subscriber that dropped nothing has no series.
    assert sample(text, series, tenant="acme", subscriber="quiet", policy="drop_oldest") is None
    assert {slow.statistics().dropped_oldest, newest.statistics().dropped_newest} == {8, 7}
    assert quiet.statistics().delivered == 0  # nobody read: delivered counts reads


async def test_per_subscriber_series_are_capped_at_the_worst_droppers() -> None:
    hub = Hub()
    try:
        subs = [
            hub.subscribe(f"t.{i}", tenant="acme", buffer=1, subscriber_id=f"s{i}")
            for i in range(MAX_SUBSCRIBER_SERIES + 20)
        ]
        for i in range(len(subs)):
            for _ in range(i + 2):  # subscriber i drops i + 1 events
                await hub.publish(f"t.{i}", 1, tenant="acme")
        text = EdgeMetrics(idle_flow(), hub).render().decode()
    finally:
        await hub.aclose()
    series = "icefloe_hub_subscriber_dropped_total"
    listed = [line for line in text.splitlines() if line.startswith(series + "{")]
    assert len(listed) == 2 * MAX_SUBSCRIBER_SERIES
    worst = f"s{len(subs) - 1}"
    assert sample(text, series, tenant="acme", subscriber=worst, policy="drop_oldest") == len(subs)
    assert sample(text, series, tenant="acme", subscriber="s0", policy="drop_oldest") is None
