"""/metrics counts what WebSocket connections sent, open and closed alike."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from test_ws import JSON, Counter, client

Serve = Any
CHUNKS = 50


def value(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def test_ws_send_figures_survive_the_connection(serve: Serve) -> None:
    counter = Counter()
    async with (
        serve(counter.flow) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
        asyncio.timeout(20),
    ):
        async with client(base, JSON) as c:
            await c.start(CHUNKS)
            while not (await c.recv()).get("done"):
                pass
            live = (await http.get("/metrics")).text
            assert value(live, "icefloe_ws_connections") == 1
            assert value(live, "icefloe_ws_chunks_total") == CHUNKS + 1
            # started, then each chunk alone or in a run: at least one message a chunk
            assert value(live, "icefloe_ws_messages_total") >= CHUNKS + 2
        # The server notices the close on its own schedule: wait for it (bounded above).
        after = (await http.get("/metrics")).text
        while value(after, "icefloe_ws_connections") != 0:
            await asyncio.sleep(0.01)
            after = (await http.get("/metrics")).text
        assert value(after, "icefloe_ws_chunks_total") == CHUNKS + 1
        assert value(after, "icefloe_ws_bytes_total") >= value(live, "icefloe_ws_bytes_total")
