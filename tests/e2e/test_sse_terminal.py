"""A browser's EventSource stops after an abnormal terminal, without calling close().

An ``event: error`` terminal carries an id (the stream's last seq + 1), so the
browser's automatic reconnect sends it as ``Last-Event-ID``, gets ``204 No
Content``, and EventSource gives up (``readyState`` CLOSED) instead of
reconnecting every ``retry`` interval for as long as the tab is open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from playwright.async_api import Page, Request

from icefloe import Context, Message, Node, create
from icefloe.transport.app import EdgeSettings
from icefloe.transport.streaming import PumpSettings

Serve = Callable[..., Any]  # conftest.serve: serve(flow, settings=None) -> url

#: the SSE retry hint: short, so a reconnect loop would show within the test
RETRY_MS = 200

# The page neither closes the source on an error nor on anything else: only
# the server's answers decide whether the browser reconnects.
OPEN_WITHOUT_CLOSE = """
(path) => {
  window.opens = 0;
  window.chunks = 0;
  window.terminals = [];
  window.source = new EventSource(path);
  window.source.addEventListener("open", () => { window.opens += 1; });
  window.source.addEventListener("chunk", () => { window.chunks += 1; });
  window.source.addEventListener("error", (event) => {
    if (event instanceof MessageEvent) {
      window.terminals.push({ id: event.lastEventId, data: JSON.parse(event.data) });
    }
  });
}
"""


def cancelled_behind_its_reader(go: asyncio.Event) -> Any:
    """Five chunks at a reader's pace; on ``go``, fifty more and a cancel in one turn.

    The fifty never reach the browser (the cancel discards them), so its last
    chunk id is far behind the stream's last seq: the case that used to loop.
    """
    holder: list[Any] = []

    async def tokens(msg: Message, ctx: Context) -> None:
        for i in range(5):
            await ctx.emit_chunk(parent=msg, text=f"t{i} ")
        await go.wait()
        for i in range(5, 55):
            await ctx.emit_chunk(parent=msg, text=f"t{i} ")
        # The burst fits the stream's window: no emit waited, so no pump ran since.
        holder[0].cancel(msg.trace_id)

    flow = create(Node(tokens, name="tokens").to())
    holder.append(flow)
    return flow


async def test_event_source_stops_after_a_cancelled_terminal(
    serve: Serve, page: Page, page_errors: list[str]
) -> None:
    settings = EdgeSettings(pump=PumpSettings(retry_ms=RETRY_MS))
    requests: list[Request] = []
    go = asyncio.Event()
    async with (
        asyncio.timeout(30),
        serve(cancelled_behind_its_reader(go), settings) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        await page.goto(f"{url}/healthz")  # same origin, no page script
        r = await client.post("/v1/streams", json={"payload": None, "headers": {"tenant": "e2e"}})
        assert r.status_code == 201
        sid = r.json()["stream_id"]
        path = f"/v1/streams/{sid}"

        def seen(request: Request) -> None:
            if request.url.startswith(url + path):
                requests.append(request)

        page.on("request", seen)
        await page.evaluate(OPEN_WITHOUT_CLOSE, path)
        await page.wait_for_function("window.chunks >= 5", polling=10, timeout=5_000)
        go.set()
        await page.wait_for_function("window.terminals.length >= 1", polling=10, timeout=5_000)
        status = (await client.get(f"{path}/status")).json()
        assert status["state"] == "cancelled"
        last_seq = status["last_seq"]
        # EventSource.CLOSED: the reconnect after the terminal got 204.
        await page.wait_for_function("window.source.readyState === 2", polling=20, timeout=5_000)
        # Ten retry intervals more: a browser still reconnecting would show here.
        await asyncio.sleep(10 * RETRY_MS / 1000)
        state, opens, terminals = await page.evaluate(
            "[window.source.readyState, window.opens, window.terminals]"
        )
        metrics = (await client.get("/metrics")).text
        # all_headers(): the headers the network stack sent, Last-Event-ID included.
        resumed = [(await r.all_headers()).get("last-event-id", "") for r in requests]
    assert state == 2
    assert last_seq >= 5  # some chunks were emitted after the browser's last one
    assert opens == 1
    assert [t["data"]["code"] for t in terminals] == ["cancelled"]
    assert terminals[0]["id"] == str(last_seq + 1)
    # The first connection and one reconnect, which sent the terminal's id.
    assert resumed == ["", str(last_seq + 1)]
    # The server agrees: one streaming response (the reconnect was a 204).
    ends = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("icefloe_http_stream_ends_total{")
    ]
    assert sum(ends) == 1
    assert page_errors == []
