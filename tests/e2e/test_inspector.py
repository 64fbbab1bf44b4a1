"""The inspector page and EventSource resumption, in a real browser."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from playwright.async_api import Page, Request, expect

from icefloe.demo import Pacing, build_demo_flow, tokenize
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import ApiKeyAuthenticator
from icefloe.transport.streaming import PumpSettings

Serve = Callable[..., Any]  # conftest.serve: serve(flow, settings=None) -> url

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: milliseconds a UI expectation may take
UI_TIMEOUT_MS = 5_000


class CuttableProxy:
    """A loopback TCP proxy whose connections the test can cut at will.

    Every accepted connection is piped to ``127.0.0.1:upstream_port``;
    :meth:`cut` closes both sockets of every open connection, as a network
    drop would. Bounded: at most ``max_connections`` at once (more are refused),
    reads of at most 64 KiB, and at most 1 MiB of client bytes kept for
    inspection.
    """

    def __init__(self, upstream_port: int, max_connections: int = 32) -> None:
        self.upstream_port = upstream_port
        self.max_connections = max_connections
        #: everything clients sent (truncated at 1 MiB), to inspect the requests
        self.client_bytes = bytearray()
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        if self._handlers:
            async with asyncio.timeout(5):
                await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> int:
        """Close both sockets of every proxied connection; returns how many."""
        pairs = list(self._pairs)
        for pair in pairs:
            for writer in pair:
                writer.transport.abort()
        return len(pairs)

    async def _handle(self, client_in: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._pairs) >= self.max_connections:
            client.transport.abort()
            return
        try:
            upstream_in, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client.transport.abort()
            return
        pair = (client, upstream)
        self._pairs.add(pair)
        self._handlers.add(task)
        try:
            pipes = [
                asyncio.ensure_future(self._pipe(client_in, upstream, record=True)),
                asyncio.ensure_future(self._pipe(upstream_in, client, record=False)),
            ]
            # Either side ending (or a cut) ends the connection as a whole.
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._pairs.discard(pair)
            self._handlers.discard(task)
            for writer in pair:
                writer.transport.abort()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, record: bool
    ) -> None:
        try:
            while data := await source.read(64 * 1024):
                if record and len(self.client_bytes) < 1024 * 1024:
                    self.client_bytes += data
                sink.write(data)
                await sink.drain()
        except OSError:
            pass  # a cut or a reset: the connection is over either way

    def last_event_ids(self) -> list[int]:
        """The ``Last-Event-ID`` of every request that carried one, in order."""
        found = re.findall(rb"(?im)^last-event-id:[ \t]*(\d+)\r?$", bytes(self.client_bytes))
        return [int(value) for value in found]


async def test_inspector_starts_streams_and_cancels(
    serve: Serve, page: Page, page_errors: list[str], tmp_path: Path
) -> None:
    # Long enough (about 7 s at 5 ms a token) to be cancelled while it runs.
    text = " ".join(f"word{i}" for i in range(1500))
    flow = build_demo_flow(Pacing(first_token_s=0.0, inter_token_s=0.005))
    async with asyncio.timeout(20), serve(flow) as url, httpx.AsyncClient(base_url=url) as client:
        await page.goto(f"{url}/")
        await expect(page).to_have_title("icefloe inspector")
        await expect(page.locator("#tenant")).to_have_value("demo")
        await expect(page.locator("#cancel")).to_be_disabled()
        await page.fill("#text", text)
        await page.fill("#tenant", "e2e")
        await page.click("#start")

        output = page.locator("#output")
        await expect(output).to_contain_text("word0 word1", timeout=UI_TIMEOUT_MS)
        listed = (await client.get("/v1/streams")).json()["streams"]
        assert [s["tenant"] for s in listed] == ["e2e"]
        sid = listed[0]["stream_id"]
        assert await output.get_attribute("data-stream-id") == sid

        row = page.locator(f'#streams tr[data-stream-id="{sid}"]')
        cells = row.locator("td")
        await expect(cells).to_have_count(6, timeout=UI_TIMEOUT_MS)
        await expect(cells.nth(0)).to_have_text(sid[:8])
        await expect(cells.nth(1)).to_have_text("e2e")
        await expect(cells.nth(2)).to_have_text("running")
        await expect(page.locator("#status")).to_contain_text("streaming")

        await page.click("#cancel")
        await expect(page.locator("#status")).to_contain_text("cancelled", timeout=UI_TIMEOUT_MS)
        status = (await client.get(f"/v1/streams/{sid}/status")).json()
        assert status["state"] == "cancelled"
        # The table catches up on its next poll.
        await expect(cells.nth(2)).to_contain_text("cancelled", timeout=UI_TIMEOUT_MS)
        await expect(page.locator("#cancel")).to_be_disabled()

        # What was shown is the text's beginning, token for token, and not all of it.
        shown = await output.text_content()
        assert shown
        assert text.startswith(shown)
        assert len(shown) < len(text)

        shot = tmp_path / "inspector.png"
        await page.screenshot(path=shot, full_page=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > len(PNG_MAGIC)
    assert page_errors == []


async def test_inspector_sends_the_bearer_token(
    serve: Serve, page: Page, page_errors: list[str]
) -> None:
    key = "e2e-key-0123456789abcdef"
    scopes = ["streams:start", "streams:read", "streams:cancel"]
    auth = ApiKeyAuthenticator({key: {"tenant": "acme", "scopes": scopes}})
    flow = build_demo_flow(Pacing(first_token_s=0.0, inter_token_s=0.002))
    requests: list[tuple[str, str, dict[str, str]]] = []

    def record(request: Request) -> None:
        if "/v1/" in request.url:
            requests.append((request.resource_type, request.url, request.headers))

    page.on("request", record)
    async with asyncio.timeout(20), serve(flow, EdgeSettings(authenticator=auth)) as url:
        await page.goto(f"{url}/")
        # Without a token the table says why it is not updating.
        await expect(page.locator("#poll-status")).to_contain_text("401", timeout=UI_TIMEOUT_MS)
        await page.fill("#token", key)
        await page.fill("#text", "one two three")
        await page.fill("#tenant", "acme")
        await page.click("#start")
        await expect(page.locator("#status")).to_contain_text("done", timeout=UI_TIMEOUT_MS)
        await expect(page.locator("#output")).to_have_text("one two three")
        await expect(page.locator("#poll-status")).to_have_text("", timeout=UI_TIMEOUT_MS)
        # A row's id button watches that stream again: its history is replayed.
        await page.locator("#streams tr[data-stream-id] button").click()
        await expect(page.locator("#status")).to_contain_text("done", timeout=UI_TIMEOUT_MS)
        await expect(page.locator("#output")).to_have_text("one two three")

    sources = [(u, h) for kind, u, h in requests if kind == "eventsource"]
    fetches = [(u, h) for kind, u, h in requests if kind == "fetch"]
    assert len(sources) == 2
    assert all(f"access_token={key}" in u for u, _ in sources)
    assert all("authorization" not in h for _, h in sources)
    authorized = [u for u, h in fetches if h.get("authorization") == f"Bearer {key}"]
    assert any(u.endswith("/v1/streams") for u in authorized)
    assert all("access_token" not in u for u, _ in fetches)
    assert page_errors == []


# Records what an EventSource delivers into window.seen / window.ended.
RECORD_EVENTS = """
(path) => {
  window.seen = [];
  window.ended = null;
  window.opens = 0;
  window.failures = [];
  const source = new EventSource(path);
  source.addEventListener("open", () => { window.opens += 1; });
  source.addEventListener("chunk", (event) => {
    const chunk = JSON.parse(event.data);
    window.seen.push({ id: event.lastEventId, seq: chunk.seq, text: chunk.text });
  });
  source.addEventListener("end", (event) => {
    window.ended = { id: event.lastEventId, chunk: JSON.parse(event.data) };
    source.close();
  });
  // Only the server's terminal closes; a network error lets the browser reconnect.
  source.addEventListener("error", (event) => {
    if (event instanceof MessageEvent) {
      window.failures.push(event.data);
      source.close();
    }
  });
}
"""


async def test_event_source_resumes_across_cut_connections(
    serve: Serve, page: Page, page_errors: list[str]
) -> None:
    n = 300
    text = " ".join(f"t{i}" for i in range(n))
    tokens = tokenize(text)
    assert len(tokens) == n
    flow = build_demo_flow(Pacing(first_token_s=0.0, inter_token_s=0.008))
    settings = EdgeSettings(pump=PumpSettings(retry_ms=200))
    async with (
        asyncio.timeout(20),
        serve(flow, settings) as url,
        CuttableProxy(httpx.URL(url).port or 80) as proxy,
        httpx.AsyncClient(base_url=url) as client,
    ):
        await page.goto(f"{proxy.url}/")
        r = await client.post("/v1/streams", json={"payload": text, "headers": {"tenant": "e2e"}})
        assert r.status_code == 201
        sid = r.json()["stream_id"]
        await page.evaluate(RECORD_EVENTS, f"v1/streams/{sid}")

        cut_at: list[int] = []
        for connected, threshold in ((1, 40), (2, 110), (3, 180)):
            # Connected (again) and some way further into the stream.
            await page.wait_for_function(
                "([opens, count]) => window.opens >= opens && window.seen.length >= count",
                arg=[connected, threshold],
                polling=10,
                timeout=UI_TIMEOUT_MS,
            )
            stats = flow.lookup(sid)
            assert stats is not None
            assert stats.state == "running", "the cut must land mid-stream"
            cut_at.append(await page.evaluate("window.seen.length"))
            assert proxy.cut() >= 1

        await page.wait_for_function("window.ended !== null", timeout=10_000)
        seen, ended, opens, failures = await page.evaluate(
            "[window.seen, window.ended, window.opens, window.failures]"
        )

    assert failures == []
    assert [c["seq"] for c in seen] == list(range(n))
    assert [c["id"] for c in seen] == [str(i) for i in range(n)]
    assert [c["text"] for c in seen] == tokens
    assert ended["id"] == str(n)
    assert ended["chunk"]["seq"] == n
    assert ended["chunk"]["done"] is True
    assert all(count < n for count in cut_at)
    # One connection, then one reconnection per cut, each resuming after what
    # the browser had received (never from the start).
    assert opens == 4
    resumed = proxy.last_event_ids()
    assert len(resumed) == 3
    assert resumed == sorted(resumed)
    assert all(last >= count - 1 for last, count in zip(resumed, cut_at, strict=True))
    assert page_errors == []


async def test_inspector_shows_the_server_load_and_its_changes(
    serve: Serve, page: Page, page_errors: list[str]
) -> None:
    sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "runtime"))
    from test_shedding import FAST, overload

    # Overloaded holds 1.5 s after the load, so a poll of the page lands in it.
    hold = dataclasses.replace(FAST, dwell_s=1.5)
    flow = build_demo_flow(Pacing(first_token_s=0.0, inter_token_s=0.005), congestion=hold)
    async with asyncio.timeout(30), serve(flow) as url:
        await page.goto(f"{url}/")
        state = page.locator("#load-state")
        await expect(state).to_have_text("normal", timeout=UI_TIMEOUT_MS)
        await overload(flow)
        await expect(state).to_have_text("overloaded", timeout=UI_TIMEOUT_MS)
        await expect(state).to_have_class("load-overloaded")
        await expect(state).to_have_text("normal", timeout=UI_TIMEOUT_MS)
        detail = page.locator("#load-detail")
        await expect(detail).to_contain_text("transitions")
        await expect(detail).to_contain_text("overloaded → normal")
    assert page_errors == []
