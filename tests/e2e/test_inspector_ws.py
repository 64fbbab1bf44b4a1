"""The inspector's WebSocket mode in a real browser: credit, pause/resume, cancel, acks, resume.

Every frame the page sends and receives is recorded (Playwright's WebSocket
events), so the tests check the protocol conversation as well as the screen.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, WebSocket, expect
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from icefloe.demo import DEMO_TEXT, Pacing, simulated_llm, tokenize
from icefloe.runtime.flow import Flow, create
from icefloe.transport.app import EdgeSettings
from icefloe.transport.auth import ApiKeyAuthenticator
from icefloe.transport.websocket import WsSettings

Serve = Callable[..., Any]  # conftest.serve: serve(flow, settings=None) -> url

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: milliseconds a UI expectation may take (generous: 2 loaded cores)
UI_TIMEOUT_MS = 10_000
#: milliseconds a whole stream may take to finish once resumed
DONE_TIMEOUT_MS = 30_000
#: a small window, so that the page has to grant credit many times per stream
WINDOW = 16
#: the demo text six times over: 330 tokens, over 3 s at the pacing below
TEXT = " ".join([DEMO_TEXT] * 6)
TOKENS = tokenize(TEXT)
#: how long "nothing arrives" is watched for while paused
QUIET_MS = 500


def demo_flow() -> Flow:
    """The demo model at 10 ms a token: fast, yet a stream lasts over 3 s.

    Load shedding is off: it measures this process's event-loop lag, and on
    two loaded cores (the test, the server and Chromium share them) it can
    refuse the stream with ``overloaded``; these tests are about the page.
    """
    llm = simulated_llm(Pacing(first_token_s=0.0, inter_token_s=0.01))
    return create(llm.to(), congestion=None)


def ws_settings() -> EdgeSettings:
    return EdgeSettings(ws=WsSettings(window=WINDOW))


@dataclass
class Frames:
    """Every WebSocket frame of a page, in the order the browser reported them."""

    #: (connection number, "sent" | "recv", decoded op), across all connections
    log: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    connections: int = 0

    def attach(self, page: Page) -> None:
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, ws: WebSocket) -> None:
        if not ws.url.endswith("/v1/ws"):
            return
        number = self.connections
        self.connections += 1
        ws.on("framesent", lambda payload: self._record(number, "sent", payload))
        ws.on("framereceived", lambda payload: self._record(number, "recv", payload))

    def _record(self, connection: int, direction: str, payload: str | bytes) -> None:
        assert isinstance(payload, str), "the JSON subprotocol uses text frames only"
        op = json.loads(payload)
        assert isinstance(op, dict)
        self.log.append((connection, direction, op))

    def ops(
        self, direction: str, name: str | None = None, connection: int | None = None
    ) -> list[dict[str, Any]]:
        return [
            op
            for conn, d, op in self.log
            if d == direction
            and (name is None or op["op"] == name)
            and (connection is None or conn == connection)
        ]

    def errors_until_terminal(self, stream_id: str) -> list[dict[str, Any]]:
        """The error ops received up to the stream's terminal, that included.

        A credit or ack the page sent just before the terminal reached it
        crosses the terminal on the wire and is answered ``not_found`` after
        it (the page has closed the socket by then and never sees it); only
        what comes up to the terminal tells how the stream went.
        """
        errors = []
        for _, direction, op in self.log:
            if direction != "recv":
                continue
            if op["op"] == "error":
                errors.append(op)
            if op["op"] == "end" or (op["op"] == "error" and op.get("stream_id") == stream_id):
                break
        return errors

    def chunks(self, connection: int | None = None) -> list[dict[str, Any]]:
        """The chunk and end ops received, in order."""
        return [
            op for op in self.ops("recv", connection=connection) if op["op"] in ("chunk", "end")
        ]


async def shown_text(page: Page) -> str:
    return await page.locator("#output").text_content() or ""


async def start_over_websocket(page: Page, url: str, text: str) -> None:
    await page.goto(f"{url}/")
    await expect(page).to_have_title("icefloe inspector")
    # The Pause button appears with the WebSocket mode, disabled until a stream runs.
    await expect(page.locator("#pause")).to_be_hidden()
    await expect(page.locator("#flow-control")).to_be_hidden()
    await page.get_by_role("radio", name="WebSocket").check()
    await expect(page.locator("#pause")).to_be_visible()
    await expect(page.locator("#pause")).to_be_disabled()
    await page.fill("#text", text)
    await page.click("#start")


async def wait_for_tokens(page: Page, count: int) -> None:
    """Until at least the first ``count`` tokens are shown."""
    await page.wait_for_function(
        "(n) => document.getElementById('output').textContent.length >= n",
        arg=len("".join(TOKENS[:count])),
        polling=20,
        timeout=UI_TIMEOUT_MS,
    )


async def stream_id_of(page: Page) -> str:
    sid = await page.locator("#output").get_attribute("data-stream-id", timeout=UI_TIMEOUT_MS)
    assert sid
    return sid


async def test_ws_mode_credit_pause_and_resume(
    serve: Serve, page: Page, page_errors: list[str], tmp_path: Path
) -> None:
    flow = demo_flow()
    frames = Frames()
    frames.attach(page)
    async with asyncio.timeout(60), serve(flow, ws_settings()) as url:
        await start_over_websocket(page, url, TEXT)
        status = page.locator("#status")
        credit = page.locator("#credit")

        # (a) Tokens arrive over the WebSocket and the credit readout moves:
        # it starts from the server's window and the page grants more as it reads.
        await expect(status).to_contain_text("over WebSocket", timeout=UI_TIMEOUT_MS)
        await expect(page.locator("#flow-control")).to_be_visible()
        await expect(page.locator("#credit-meter")).to_have_attribute("max", str(WINDOW))
        await expect(credit).to_have_attribute("data-window", str(WINDOW))
        await page.wait_for_function(
            "() => Number(document.getElementById('credit').dataset.grants) >= 2",
            polling=20,
            timeout=UI_TIMEOUT_MS,
        )
        await expect(credit).to_have_text(re.compile(rf"^\d+ of {WINDOW} · \d+ grants · acked"))
        await wait_for_tokens(page, 24)
        sid = await stream_id_of(page)
        await expect(status).to_contain_text(f"stream {sid[:8]} over WebSocket")

        # (b) Pause: once the page has it confirmed, nothing more arrives.
        await page.locator("#pause").click()
        await expect(page.locator("#pause")).to_have_text("Resume")
        await expect(status).to_have_attribute("data-state", "paused", timeout=UI_TIMEOUT_MS)
        paused_text = await shown_text(page)
        received = len(frames.chunks())
        with pytest.raises(PlaywrightTimeoutError):
            await page.wait_for_function(
                "(n) => document.getElementById('output').textContent.length !== n",
                arg=len(paused_text),
                polling=20,
                timeout=QUIET_MS,
            )
        assert await shown_text(page) == paused_text
        assert len(frames.chunks()) == received
        stats = flow.lookup(sid)
        assert stats is not None
        assert stats.state == "running", "the pause must land mid-stream"
        assert TEXT.startswith(paused_text)
        assert len(paused_text) < len(TEXT)

        # Resume: the stream completes, every token shown once, in order.
        await page.locator("#pause").click()
        await expect(status).to_have_attribute("data-state", "done", timeout=DONE_TIMEOUT_MS)
        assert await shown_text(page) == TEXT
        await expect(page.locator("#pause")).to_have_text("Pause")
        await expect(page.locator("#pause")).to_be_disabled()
        await expect(page.locator("#cancel")).to_be_disabled()

        # (c) A screenshot of the finished WebSocket view.
        shot = tmp_path / "inspector-ws.png"
        await page.screenshot(path=shot, full_page=True)

    assert shot.read_bytes().startswith(PNG_MAGIC)
    assert page_errors == []
    assert frames.connections == 1

    # The conversation: hello, then start with the form's payload and tenant.
    sent = frames.ops("sent")
    assert sent[0] == {"op": "hello"}
    start = sent[1]
    assert start["op"] == "start"
    assert start["payload"] == TEXT
    assert start["headers"] == {"tenant": "demo"}
    welcome = frames.ops("recv", "welcome")
    assert len(welcome) == 1
    assert welcome[0]["window"] == WINDOW
    assert frames.ops("recv", "started") == [
        {"op": "started", "ref": start["ref"], "stream_id": sid}
    ]
    assert frames.errors_until_terminal(sid) == []

    # Every token once, in order, then the end; on the wire and on screen.
    chunks = frames.chunks()
    n = len(TOKENS)
    assert [c["seq"] for c in chunks] == list(range(n + 1))
    assert [c["text"] for c in chunks] == [*TOKENS, ""]
    assert [c["op"] for c in chunks] == ["chunk"] * n + ["end"]
    assert all(c["stream_id"] == sid for c in chunks)

    # Credit: the server never sent more than the page had granted so far.
    granted = WINDOW
    got = 0
    for _, direction, op in frames.log:
        if direction == "sent" and op["op"] == "credit":
            assert op["stream_id"] == sid
            assert 1 <= op["n"] <= WINDOW
            granted += op["n"]
        elif direction == "recv" and op["op"] in ("chunk", "end"):
            got += 1
            assert got <= granted, f"chunk {got} arrived with only {granted} credits granted"
    assert granted >= n + 1

    # Pause and resume were sent once each, for this stream, in that order.
    controls = [op for op in sent if op["op"] in ("pause", "resume")]
    assert controls == [{"op": "pause", "stream_id": sid}, {"op": "resume", "stream_id": sid}]

    # Acks: batched, moving forward, at most 32 shown chunks apart, the last one the end.
    acks = frames.ops("sent", "ack")
    seqs = [a["seq"] for a in acks]
    assert all(a["stream_id"] == sid for a in acks)
    assert seqs == sorted(set(seqs))
    assert seqs[-1] == n
    assert all(b - a <= 32 for a, b in pairwise([-1, *seqs]))
    assert len(acks) <= (n + 1) // 2


async def test_ws_mode_cancel_while_paused(
    serve: Serve, page: Page, page_errors: list[str]
) -> None:
    flow = demo_flow()
    frames = Frames()
    frames.attach(page)
    async with asyncio.timeout(60), serve(flow, ws_settings()) as url:
        await start_over_websocket(page, url, TEXT)
        await wait_for_tokens(page, 20)
        sid = await stream_id_of(page)
        await page.locator("#pause").click()
        status = page.locator("#status")
        await expect(status).to_have_attribute("data-state", "paused", timeout=UI_TIMEOUT_MS)

        await page.locator("#cancel").click()
        await expect(status).to_have_attribute("data-state", "cancelled", timeout=UI_TIMEOUT_MS)
        stats = flow.lookup(sid)
        assert stats is None or stats.state == "cancelled"
        await expect(page.locator("#cancel")).to_be_disabled()
        await expect(page.locator("#pause")).to_be_disabled()
        shown = await shown_text(page)
        assert TEXT.startswith(shown)
        assert len(shown) < len(TEXT)

    assert page_errors == []
    cancels = frames.ops("sent", "cancel")
    assert cancels == [{"op": "cancel", "stream_id": sid}]
    errors = frames.errors_until_terminal(sid)
    assert [(e["code"], e.get("stream_id")) for e in errors] == [("cancelled", sid)]


async def test_ws_mode_resumes_its_session_after_a_drop(
    serve: Serve, page: Page, page_errors: list[str]
) -> None:
    flow = demo_flow()
    frames = Frames()
    frames.attach(page)
    async with asyncio.timeout(60), serve(flow, ws_settings()) as url:
        await start_over_websocket(page, url, TEXT)
        await wait_for_tokens(page, 40)
        sid = await stream_id_of(page)
        # A drop the page did not ask for: close its socket behind its back.
        await page.evaluate("() => current.ws.close(4999, 'test drop')")
        status = page.locator("#status")
        await expect(status).to_have_attribute("data-state", "done", timeout=DONE_TIMEOUT_MS)
        assert await shown_text(page) == TEXT
        stats = flow.lookup(sid)
        assert stats is None or stats.state == "done"

    assert page_errors == []
    assert frames.connections == 2
    session_id = frames.ops("recv", "welcome", connection=0)[0]["session_id"]
    # The second connection resumes the session and the server resends from
    # the last ack on, which the page skips where it had shown it already.
    hello = frames.ops("sent", connection=1)[0]
    assert hello == {"op": "hello", "session_id": session_id, "resume": True}
    welcome = frames.ops("recv", "welcome", connection=1)
    assert [(w["session_id"], w["resumed"]) for w in welcome] == [(session_id, True)]
    acked = max(a["seq"] for a in frames.ops("sent", "ack", connection=0))
    first = frames.chunks(connection=0)
    second = frames.chunks(connection=1)
    assert second[0]["seq"] == acked + 1
    assert [c["seq"] for c in second] == list(range(acked + 1, len(TOKENS) + 1))
    assert [c["seq"] for c in first] == list(range(len(first)))
    assert first[-1]["seq"] >= acked
    assert frames.errors_until_terminal(sid) == []


async def test_ws_mode_sends_the_token_as_access_token(
    serve: Serve, page: Page, page_errors: list[str]
) -> None:
    key = "e2e-ws-key-0123456789abcdef"
    scopes = ["streams:start", "streams:read", "streams:cancel"]
    settings = EdgeSettings(
        authenticator=ApiKeyAuthenticator({key: {"tenant": "acme", "scopes": scopes}})
    )
    urls: list[str] = []
    subscribes: list[dict[str, Any]] = []

    def record(ws: WebSocket) -> None:
        urls.append(ws.url)
        ws.on("framesent", lambda payload: subscribes.extend(_subscribe_ops(payload)))

    page.on("websocket", record)
    async with asyncio.timeout(60), serve(demo_flow(), settings) as url:
        status = page.locator("#status")
        # Without a token the handshake is refused; the page says so and stops.
        await start_over_websocket(page, url, "one two three")
        await expect(status).to_have_attribute("data-state", "closed", timeout=UI_TIMEOUT_MS)
        await expect(status).to_contain_text("refused")
        # A browser cannot set headers on a WebSocket: the token goes as ?access_token=.
        await page.fill("#token", key)
        await page.fill("#tenant", "acme")
        await page.click("#start")
        await expect(status).to_have_attribute("data-state", "done", timeout=UI_TIMEOUT_MS)
        await expect(page.locator("#output")).to_have_text("one two three")
        # A row's id button follows that stream again (subscribe from seq 0).
        await page.locator("#streams tr[data-stream-id] button").click()
        await expect(status).to_have_attribute("data-state", "done", timeout=UI_TIMEOUT_MS)
        await expect(page.locator("#output")).to_have_text("one two three")
        # Another tenant's stream is refused, and said so.
        await page.fill("#tenant", "globex")
        await page.click("#start")
        await expect(status).to_have_attribute("data-state", "error", timeout=UI_TIMEOUT_MS)
        await expect(status).to_contain_text("forbidden")

    assert [u.rsplit("/", 1)[-1] for u in urls] == ["ws"] + [f"ws?access_token={key}"] * 3
    assert len(subscribes) == 1
    assert subscribes[0]["from_seq"] == 0
    assert page_errors == []


def _subscribe_ops(payload: str | bytes) -> list[dict[str, Any]]:
    op = json.loads(payload)
    return [op] if op["op"] == "subscribe" else []
