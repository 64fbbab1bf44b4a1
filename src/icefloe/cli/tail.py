"""``icefloe tail``: a terminal client that follows a stream and resumes.

It reads SSE with httpx and :class:`~icefloe.core.sse.SseParser`, prints each
chunk's text as it arrives, and after a dropped connection reconnects with
``Last-Event-ID`` (waiting the server's ``retry`` hint), so nothing is printed
twice and nothing is skipped.
"""

from __future__ import annotations

import asyncio
import json

import httpx
from rich.console import Console

from icefloe.core.sse import SseParser

__all__ = ["tail_stream"]

#: reconnection attempts in a row before giving up
MAX_RETRIES = 20


async def tail_stream(
    url: str, token: str | None, from_seq: int, out: Console, err: Console
) -> int:
    """Follow ``url`` until its terminal; the exit status (0: done)."""
    headers = {"Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    next_seq = from_seq
    failures = 0
    retry_s = 2.0
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client:
        while True:
            try:
                async with client.stream(
                    "GET", url, params={"from_seq": next_seq}, headers=headers
                ) as response:
                    if response.status_code == 204:
                        return 0
                    if response.status_code != 200:
                        body = (await response.aread()).decode(errors="replace")
                        err.print(f"[red]{response.status_code}[/red] {body[:300]}")
                        return 1
                    parser = SseParser()
                    async for data in response.aiter_bytes():
                        parser.feed_data(data)
                        if parser.retry_ms is not None:
                            retry_s = parser.retry_ms / 1000
                        for event in parser.events_received():
                            failures = 0
                            if event.event == "error":
                                err.print(f"\n[red]stream ended: {event.data}[/red]")
                                return 1
                            chunk = json.loads(event.data)
                            next_seq = chunk["seq"] + 1
                            out.print(chunk["text"], end="", soft_wrap=True)
                            if event.event == "end":
                                out.print()
                                return 0
            except httpx.HTTPError as exc:
                failures += 1
                if failures > MAX_RETRIES:
                    err.print(f"\n[red]giving up: {exc}[/red]")
                    return 1
            await asyncio.sleep(retry_s)
