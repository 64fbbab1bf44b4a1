"""Load shedding over HTTP: 503 + Retry-After while overloaded, readiness, metrics, recovery."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from icefloe import Context, Message, Node, NodePolicy, create
from icefloe.core.congestion import CongestionState

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "runtime"))
from test_shedding import FAST, overload

#: as FAST, but the overloaded state holds for 1 s after the load, long
#: enough for the requests below to see it
HOLD = dataclasses.replace(FAST, dwell_s=1.0)

Serve = Any
TENANT = {"tenant": "acme"}


async def test_overloaded_server_answers_503_and_recovers(serve: Serve) -> None:
    async def count(msg: Message, ctx: Context) -> None:
        for i in range(int(msg.payload)):
            await ctx.emit_chunk(parent=msg, text=str(i))
        await ctx.emit_chunk(parent=msg, text="", done=True)

    node = Node(count, name="count", policy=NodePolicy(reliability="exactly_once"))
    flow = create(node.to(), congestion=HOLD)
    async with (
        serve(flow) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        asyncio.timeout(30),
    ):
        # Longer than its window: it waits for a reader, so a stream is running
        # while the load comes (with none running, nothing is shed).
        r = await client.post("/v1/streams", json={"payload": 2000, "headers": TENANT})
        assert r.status_code == 201
        accepted = r.json()["stream_id"]
        await overload(flow)
        # The load has stopped; the state holds for the dwell time.
        refused = await client.post("/v1/streams", json={"payload": 5, "headers": TENANT})
        ready = await client.get("/readyz")
        metrics = (await client.get("/metrics")).text
        assert flow.congestion is CongestionState.OVERLOADED
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        assert ready.status_code == 503
        assert 'icefloe_congestion_state{state="overloaded"} 2.0' in metrics
        # The stream accepted before the load is delivered whole.
        body = (
            await client.get(f"/v1/streams/{accepted}", headers={"accept": "application/x-ndjson"})
        ).text
        seqs = [line for line in body.splitlines() if line.strip()]
        assert len(seqs) == 2001
        started = time.monotonic()
        while flow.congestion is not CongestionState.NORMAL:
            await asyncio.sleep(0.02)
        assert time.monotonic() - started < 3.0
        ready = (await client.get("/readyz")).json()
        assert (ready["status"], ready["load"]) == ("ready", "normal")
        # normal -> overloaded (maybe through congested) -> normal
        assert ready["transitions"] >= 2
        assert 0.0 <= ready["load_for_s"] < 3.0
        again = await client.post("/v1/streams", json={"payload": 5, "headers": TENANT})
        assert again.status_code == 201
        assert "icefloe_streams_shed_total" in (await client.get("/metrics")).text
