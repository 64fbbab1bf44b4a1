"""``icefloe.js`` in Chromium: many streams on one WebSocket and on one SSE connection,
through network cuts, every seq delivered exactly once (issue 14, parts 3 and 4).

The page loads the module the server ships (``/static/icefloe.js``) through
a TCP proxy (tests/cutproxy.py) that the test uses to cut every connection
at once, as a network drop would: no close frame, no end of body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from playwright.async_api import Page

from cutproxy import cut_proxy
from icefloe import Context, Message, Node, NodePolicy, create
from icefloe.runtime.flow import Flow
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import ApiKeyAuthenticator
from icefloe.transport.websocket import WsSettings

Serve = Callable[..., Any]  # conftest.serve: serve(flow, settings=None) -> url

#: chunks per stream before its end chunk
CHUNKS = 120
#: a small window, so that every stream needs many credit grants
WINDOW = 8
#: seconds between chunks after the gate: the second half lasts over a second
PACE_S = 0.02
#: milliseconds a browser-side wait may take (2 loaded cores)
WAIT_MS = 30_000


def gated_flow(half: asyncio.Event, pace_s: float) -> Flow:
    """Each run emits half its chunks, waits for ``half``, then the rest at a pace."""

    async def tokens(msg: Message, ctx: Context) -> None:
        for i in range(CHUNKS):
            if i == CHUNKS // 2:
                await half.wait()
            if i > CHUNKS // 2:
                await asyncio.sleep(pace_s)
            await ctx.emit_chunk(parent=msg, text=f"{i} ")
        await ctx.emit_chunk(parent=msg, text="", done=True)

    policy = NodePolicy(max_concurrency=32)
    return create(Node(tokens, name="tokens", policy=policy).to(), congestion=None)


WS_SCRIPT = """
async ({n, chunks}) => {
  const { Client } = await import("/static/icefloe.js");
  const client = new Client({ retryBaseMs: 100, retryMaxMs: 1000 });
  // Acks every 32 chunks, more than the window: a resume resends more than a
  // window of chunks the page already has, and their credit must come back.
  const conn = client.connect({ ackEvery: 32 });
  window.got = {};
  window.states = [];
  window.streams = [];
  conn.options.onState = (state, detail) => window.states.push(`${state}:${detail}`);
  window.conn = conn;
  const done = [];
  for (let i = 0; i < n; i += 1) {
    const s = conn.start(`p${i}`, { tenant: "e2e" }, {
      onChunk: (c) => { (window.got[c.stream_id] ||= []).push(c.seq); },
    });
    window.streams.push(s);
    done.push(s.done);
  }
  window.allDone = Promise.all(done).then(() => "done");
}
"""

SSE_SCRIPT = """
async ({ids}) => {
  const { Client } = await import("/static/icefloe.js");
  const client = new Client({ retryBaseMs: 100, retryMaxMs: 1000 });
  window.got = {};
  window.ended = 0;
  window.events = client.events({
    streams: ids,
    onChunk: (c) => { (window.got[c.stream_id] ||= []).push(c.seq); },
    onEnd: () => { window.ended += 1; },
  });
}
"""

LEAST = "() => Math.min(...Object.values(window.got).map((s) => s.length))"


async def least_delivered(page: Page, count: int, at_least: int) -> None:
    """Wait until ``count`` streams have each delivered ``at_least`` chunks."""
    await page.wait_for_function(
        f"() => Object.keys(window.got).length === {count} && ({LEAST})() >= {at_least}",
        timeout=WAIT_MS,
    )


async def test_twenty_streams_on_one_websocket_survive_cuts_exactly_once(
    serve: Serve, page: Page, page_errors: list[str]
) -> None:
    half = asyncio.Event()
    settings = EdgeSettings(ws=WsSettings(window=WINDOW))
    async with (
        asyncio.timeout(90),
        serve(gated_flow(half, PACE_S), settings) as url,
        cut_proxy(url) as proxy,
    ):
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        await page.goto(f"{proxy.url}/healthz")
        await page.evaluate(WS_SCRIPT, {"n": 20, "chunks": CHUNKS})
        # Every stream is held at its half-way gate, with a window of 8: the
        # page granted credit 7 times per stream or more to get there.
        await least_delivered(page, 20, CHUNKS // 2)
        assert len(sockets) == 1  # one WebSocket carries all twenty
        assert proxy.cut() >= 1
        half.set()
        await page.wait_for_function("() => window.conn.state === 'reconnecting'")
        # Cut again while chunks flow after the resume.
        await least_delivered(page, 20, CHUNKS // 2 + 10)
        assert proxy.cut() >= 1
        assert await page.evaluate("window.allDone") == "done"
        await page.wait_for_function("() => window.conn.state === 'open'", timeout=WAIT_MS)
        got: dict[str, list[int]] = await page.evaluate("window.got")
        report = await page.evaluate(
            """() => ({
              reconnects: window.conn.reconnects,
              states: window.states,
              grants: window.streams.map((s) => s.grants),
              duplicates: window.streams.reduce((a, s) => a + s.duplicates, 0),
            })"""
        )
    assert len(got) == 20
    for sid, seqs in got.items():
        assert seqs == list(range(CHUNKS + 1)), sid
    assert report["reconnects"] == 2
    assert report["states"].count("open:resumed") == 2, report["states"]
    assert min(report["grants"]) >= CHUNKS // WINDOW
    assert len(sockets) >= 3  # the first WebSocket and at least one per cut
    assert not page_errors


async def test_one_sse_connection_follows_ten_streams_through_a_cut(
    serve: Serve, page: Page, page_errors: list[str]
) -> None:
    half = asyncio.Event()
    async with (
        asyncio.timeout(90),
        serve(gated_flow(half, PACE_S)) as url,
        cut_proxy(url) as proxy,
        httpx.AsyncClient(base_url=url) as client,
    ):
        ids = []
        for i in range(10):
            r = await client.post("/v1/streams", json={"payload": i, "headers": {"tenant": "e"}})
            ids.append(r.json()["stream_id"])
        await page.goto(f"{proxy.url}/healthz")
        events_requests: list[str] = []
        page.on(
            "request",
            lambda req: events_requests.append(req.url) if "/v1/events" in req.url else None,
        )
        await page.evaluate(SSE_SCRIPT, {"ids": ids})
        await least_delivered(page, 10, CHUNKS // 2)
        assert len(events_requests) == 1  # one connection for all ten
        assert proxy.cut() >= 1
        half.set()
        await least_delivered(page, 10, CHUNKS // 2 + 10)
        assert proxy.cut() >= 1
        await page.wait_for_function("() => window.ended === 10", timeout=WAIT_MS)
        got: dict[str, list[int]] = await page.evaluate("window.got")
        reconnects = await page.evaluate("window.events.reconnects")
        duplicates = await page.evaluate("window.events.duplicates")
    assert sorted(got) == sorted(ids)
    for sid, seqs in got.items():
        assert seqs == list(range(CHUNKS + 1)), sid
    assert reconnects >= 2
    # The server resumed each stream exactly after the cursor: nothing came twice.
    assert duplicates == 0
    assert not page_errors


ONE_SSE_SCRIPT = """
async ({id, token}) => {
  const { Client } = await import("/static/icefloe.js");
  const client = new Client({ token, retryBaseMs: 100, retryMaxMs: 1000 });
  window.got = {};
  window.ended = 0;
  window.one = client.sse(id, {
    onChunk: (c) => { (window.got[c.stream_id] ||= []).push(c.seq); },
    onEnd: () => { window.ended += 1; },
  });
}
"""


async def test_one_stream_over_sse_with_a_bearer_token_through_a_cut(
    serve: Serve, page: Page, page_errors: list[str]
) -> None:
    key = "browser-key-0123456789abcdef"
    grants = {key: {"tenant": "e", "scopes": ["streams:start", "streams:read"]}}
    settings = EdgeSettings(authenticator=ApiKeyAuthenticator(grants))
    half = asyncio.Event()
    headers: list[dict[str, str]] = []
    async with (
        asyncio.timeout(60),
        serve(gated_flow(half, PACE_S), settings) as url,
        cut_proxy(url) as proxy,
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client,
    ):
        r = await client.post("/v1/streams", json={"payload": 0, "headers": {"tenant": "e"}})
        sid = r.json()["stream_id"]
        page.on(
            "request",
            lambda req: headers.append(req.headers) if f"/v1/streams/{sid}" in req.url else None,
        )
        await page.goto(f"{proxy.url}/healthz")
        await page.evaluate(ONE_SSE_SCRIPT, {"id": sid, "token": key})
        await least_delivered(page, 1, CHUNKS // 2)
        assert proxy.cut() >= 1
        half.set()
        await page.wait_for_function("() => window.ended === 1", timeout=WAIT_MS)
        got: dict[str, list[int]] = await page.evaluate("window.got")
        reconnects = await page.evaluate("window.one.reconnects")
    assert got == {sid: list(range(CHUNKS + 1))}
    assert reconnects >= 1
    # fetch sends the token as a header, never in the URL; a reconnect sends its position.
    assert all(h.get("authorization") == f"Bearer {key}" for h in headers)
    assert any(h.get("last-event-id") == str(CHUNKS // 2 - 1) for h in headers)
    assert not page_errors


TOPICS_SCRIPT = """
async () => {
  const { Client } = await import("/static/icefloe.js");
  const client = new Client();
  const conn = client.connect();
  window.topicEvents = [];
  conn.subTopic("news.*", { onEvent: (e) => window.topicEvents.push([e.topic, e.data]) });
  await conn.ready;
  await conn.ping();  // the sub_topic is in place
  conn.publish("news.a", { n: 1 });
  await client.publish("news.b", { n: 2 });
  const s = conn.start("x", { tenant: "e2e" }, {});
  await new Promise((resolve) => { s.options.onStarted = resolve; });
  s.cancel();
  try { await s.done; window.outcome = "done"; } catch (err) { window.outcome = err.code; }
}
"""


async def test_topics_and_cancel_over_the_websocket(
    serve: Serve, page: Page, page_errors: list[str]
) -> None:
    half = asyncio.Event()  # never set: the run is cancelled half way
    async with asyncio.timeout(60), serve(gated_flow(half, PACE_S)) as url:
        await page.goto(f"{url}/healthz")
        await page.evaluate(TOPICS_SCRIPT)
        await page.wait_for_function("() => window.topicEvents.length === 2", timeout=WAIT_MS)
        events = await page.evaluate("window.topicEvents")
        outcome = await page.evaluate("window.outcome")
    assert events == [["news.a", {"n": 1}], ["news.b", {"n": 2}]]
    assert outcome == "cancelled"
    assert not page_errors
