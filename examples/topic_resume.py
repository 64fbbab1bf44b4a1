"""Hub topic history that survives a restart: resume a topic by (offset, epoch).

Run it with ``python examples/topic_resume.py``: it runs an app (in process,
through ``icefloe.testing.client``) whose hub keeps its topics in a SQLite
file (``EdgeSettings(topic_store=...)``, what ``icefloe serve --store
sqlite:///topics.db`` does), publishes five events, reads two of them, stops
the app (as a deploy would), starts a new one on the same file, and resumes
the topic from the offset after the last event read, with its epoch: the
rest arrive, each once, under the same epoch, and the next publish numbers
on. A resume under another epoch is ``410 history_gone``: the client learns
that its offsets no longer mean anything.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import httpx

from icefloe import Context, Flow, Message, Node, create
from icefloe.testing import client as app_client
from icefloe.transport.app import EdgeSettings, create_app

TOPIC = "room.lobby"


def build() -> Flow:
    """A flow to serve beside the hub (this example only uses the hub)."""

    async def echo(msg: Message, ctx: Context) -> None:
        await ctx.emit_chunk(parent=msg, text=str(msg.payload), done=True)

    return create(Node(echo, name="echo").to())


async def read(client: httpx.AsyncClient, want: int, **query: Any) -> list[dict[str, Any]]:
    """The first ``want`` events of ``TOPIC`` (SSE), from ``query``'s resume point."""
    got: list[dict[str, Any]] = []
    async with client.stream("GET", f"/v1/topics/{TOPIC}", params=query) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
                if len(got) == want:
                    break
    return got


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = EdgeSettings(topic_store=f"sqlite:///{Path(tmp) / 'topics.db'}")
        async with app_client(create_app(build(), settings)) as client:
            for n in range(5):
                await client.post(f"/v1/topics/{TOPIC}", json={"data": {"n": n}})
            seen = await read(client, 2, from_offset=0)
        last = seen[-1]
        print(f"read offsets 0..{last['offset']} under epoch {last['epoch']}; restarting")

        async with app_client(create_app(build(), settings)) as client:
            rest = await read(client, 3, from_offset=last["offset"] + 1, epoch=last["epoch"])
            offsets = [e["offset"] for e in rest]
            same = {e["epoch"] for e in rest} == {last["epoch"]}
            print(f"resumed offsets {offsets} under the same epoch: {same}")
            answer = (await client.post(f"/v1/topics/{TOPIC}", json={"data": {"n": 5}})).json()
            kept = answer["epoch"] == last["epoch"]
            print(f"the next publish: offset {answer['offset']}, same epoch: {kept}")
            query = {"from_offset": "0", "epoch": "0123456789ab"}
            async with client.stream("GET", f"/v1/topics/{TOPIC}", params=query) as gone:
                body = json.loads(await gone.aread())
                print(f"a resume under another epoch: {gone.status_code} {body['error']['code']}")


if __name__ == "__main__":
    asyncio.run(main())
