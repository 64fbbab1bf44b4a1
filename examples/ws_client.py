"""A WebSocket client of `icefloe demo`: credit, pause/resume, acks and session resume.

Run `make demo` (or `icefloe demo`) in one terminal, then:

    python examples/ws_client.py [ws://127.0.0.1:8765/v1/ws]

It starts one demo answer, reads it with a small credit window (granting more
as it goes), pauses for a moment, drops the connection halfway and resumes
the session: the answer still arrives complete, each token exactly once.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

WINDOW_TOP_UP = 16


async def send(ws: ClientConnection, op: str, **fields: Any) -> None:
    await ws.send(json.dumps({"op": op, **fields}))


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message = json.loads(await ws.recv())
    assert isinstance(message, dict)
    return message


async def read_tokens(
    ws: ClientConnection, stream_id: str, tokens: dict[int, str], stop_after: int | None
) -> bool:
    """Print tokens, ack each, top credit up; True once the stream ended."""
    credit = 0
    while stop_after is None or len(tokens) < stop_after:
        message = await receive(ws)
        if message["op"] == "error":
            print(f"\n[error {message['code']}: {message['message']}]")
            return True
        if message["op"] not in ("chunk", "end"):
            continue
        if message["seq"] not in tokens:  # a resend of an unacked token is skipped
            tokens[message["seq"]] = message["text"]
            print(message["text"], end="", flush=True)
        await send(ws, "ack", stream_id=stream_id, seq=message["seq"])
        if message["op"] == "end":
            return True
        credit += 1
        if credit == WINDOW_TOP_UP:  # grant as we consume: the server never runs far ahead
            await send(ws, "credit", stream_id=stream_id, n=WINDOW_TOP_UP)
            credit = 0
    return False


async def main(url: str) -> None:
    tokens: dict[int, str] = {}
    async with connect(url, subprotocols=["icefloe.v1.json"]) as ws:  # type: ignore[list-item]
        await send(ws, "hello")
        session = (await receive(ws))["session_id"]
        # payload None: the demo streams its built-in text
        await send(ws, "start", ref="q1", payload=None, headers={"tenant": "demo"})
        stream_id = (await receive(ws))["stream_id"]
        await read_tokens(ws, stream_id, tokens, stop_after=10)
        await send(ws, "pause", stream_id=stream_id)
        print(" [paused]", end="", flush=True)
        await asyncio.sleep(1.0)
        await send(ws, "resume", stream_id=stream_id)
        print(" [resumed] ", end="", flush=True)
        await read_tokens(ws, stream_id, tokens, stop_after=40)
    print(" [connection dropped]", end="", flush=True)
    async with connect(url, subprotocols=["icefloe.v1.json"]) as ws:  # type: ignore[list-item]
        await send(ws, "hello", session_id=session, resume=True)
        welcome = await receive(ws)
        print(f" [session resumed: {welcome['resumed']}] ", end="", flush=True)
        await read_tokens(ws, stream_id, tokens, stop_after=None)
    seqs = sorted(tokens)
    assert seqs == list(range(len(seqs))), "a gap or a duplicate"
    print(f"\n{len(seqs)} chunks, every seq exactly once")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765/v1/ws"))
