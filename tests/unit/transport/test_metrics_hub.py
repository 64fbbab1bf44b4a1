"""/metrics shows the hub's totals and each dropping tenant's drops, never a subscriber id."""

from __future__ import annotations

import re

from icefloe import Context, Flow, Message, Node, create
from icefloe.hub import Hub
from icefloe.transport.metrics import MAX_TENANT_SERIES, EdgeMetrics


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


async def test_drops_are_counted_per_tenant_and_in_total_never_per_subscriber() -> None:
    hub = Hub()
    try:
        slow = hub.subscribe("chat.>", tenant="acme", buffer=2, subscriber_id="slow")
        newest = hub.subscribe(
            "chat.>", tenant="acme", buffer=3, overflow="drop_newest", subscriber_id="picky"
        )
        quiet = hub.subscribe("chat.>", tenant="acme", buffer=64, subscriber_id="quiet")
        other = hub.subscribe("chat.>", tenant="beta", buffer=64, subscriber_id="calm")
        for n in range(10):
            await hub.publish("chat.room", {"n": n}, tenant="acme")
        text = EdgeMetrics(idle_flow(), hub).render().decode()
    finally:
        await hub.aclose()
    assert sample(text, "icefloe_hub_published_total") == 10
    assert sample(text, "icefloe_hub_subscribers") == 4
    assert sample(text, "icefloe_hub_dropped_total", policy="drop_oldest") == 8
    assert sample(text, "icefloe_hub_dropped_total", policy="drop_newest") == 7
    series = "icefloe_hub_tenant_dropped"
    assert sample(text, series, tenant="acme", policy="drop_oldest") == 8
    assert sample(text, series, tenant="acme", policy="drop_newest") == 7
    # A tenant whose subscriptions dropped nothing has no series.
    assert sample(text, series, tenant="beta", policy="drop_oldest") is None
    # No series names a subscriber (ids are unbounded and a client's own).
    assert "subscriber=" not in text
    assert not any(name in text for name in ("slow", "picky", "quiet", "calm"))
    assert {slow.statistics().dropped_oldest, newest.statistics().dropped_newest} == {8, 7}
    assert quiet.statistics().delivered == 0  # nobody read: delivered counts reads
    assert other.statistics().dropped_oldest == 0


async def test_per_tenant_series_are_capped_at_the_worst_droppers() -> None:
    hub = Hub()
    tenants = MAX_TENANT_SERIES + 20
    try:
        subs = [  # held: a subscription nobody holds is collected
            hub.subscribe(f"t.{i}", tenant=f"c{i}", buffer=1, subscriber_id=f"s{i}")
            for i in range(tenants)
        ]
        for i in range(tenants):
            for _ in range(i + 2):  # tenant i's subscriber drops i + 1 events
                await hub.publish(f"t.{i}", 1, tenant=f"c{i}")
        text = EdgeMetrics(idle_flow(), hub).render().decode()
    finally:
        await hub.aclose()
    series = "icefloe_hub_tenant_dropped"
    listed = [line for line in text.splitlines() if line.startswith(series + "{")]
    assert len(listed) == 2 * MAX_TENANT_SERIES
    worst = f"c{tenants - 1}"
    assert sample(text, series, tenant=worst, policy="drop_oldest") == tenants
    assert sample(text, series, tenant="c0", policy="drop_oldest") is None
    assert len(subs) == tenants
