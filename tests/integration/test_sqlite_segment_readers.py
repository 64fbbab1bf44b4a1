"""Over HTTP, a SQLite store's segment records: read back after a restart,
and a flipped bit in one delivers none of its chunks (the reader gets
``corrupt`` after what precedes it)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
from test_http_durable import TENANT, read_sse

from icefloe import Context, Message, Node, NodePolicy, create
from icefloe.store import open_store

WORDS = [f"s{i} " for i in range(40)]


def segment_flow(url: str) -> Any:
    async def words(msg: Message, ctx: Context) -> None:
        for i, word in enumerate(WORDS):
            await ctx.emit_chunk(parent=msg, text=word)
            if i % 8 == 7:
                await asyncio.sleep(0.01)  # a pause: the next chunks make another segment
        await ctx.emit_chunk(parent=msg, text="", done=True)

    node = Node(words, name="words", policy=NodePolicy(reliability="at_least_once"))
    return create(node.to(), store=open_store(url))


def segment_rows(path: Path) -> list[tuple[int, int, int]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT first_seq, last_seq, length(sizes) FROM segments ORDER BY last_seq"
        ).fetchall()
    conn.close()
    return rows


def flip_row(path: Path, first_seq: int) -> None:
    with sqlite3.connect(path) as conn:
        (blob,) = conn.execute(
            "SELECT records FROM segments WHERE first_seq = ?", (first_seq,)
        ).fetchone()
        damaged = bytearray(blob)
        damaged[len(damaged) // 2] ^= 0x01
        conn.execute(
            "UPDATE segments SET records = ? WHERE first_seq = ?", (bytes(damaged), first_seq)
        )
    conn.close()


async def test_segments_read_back_and_a_corrupt_one_is_never_delivered(
    serve: Any, tmp_path: Path
) -> None:
    path = tmp_path / "runs.db"
    url = f"sqlite:///{path}"
    async with asyncio.timeout(30):
        flow = segment_flow(url)
        async with serve(flow) as base, httpx.AsyncClient(base_url=base) as client:
            await flow.store_ready()
            r = await client.post("/v1/streams", json={"payload": None, "headers": TENANT})
            sid = r.json()["stream_id"]
            live, _ = await read_sse(client, sid, {})
        rows = segment_rows(path)
        # every row holds one segment record (empty sizes), and the rows cover 0..40
        assert all(size == 0 for _, _, size in rows)
        assert rows[0][0] == 0
        assert rows[-1][1] == len(WORDS)
        assert len(rows) >= 2
        flow = segment_flow(url)
        async with serve(flow) as base, httpx.AsyncClient(base_url=base) as client:
            await flow.store_ready()
            stored, errors = await read_sse(client, sid, {"Last-Event-ID": "2"})
        assert [c["text"] for c in live[:-1]] == WORDS
        assert [c["seq"] for c in stored] == list(range(3, len(WORDS) + 1))
        assert [c["text"] for c in stored[:-1]] == WORDS[3:]
        assert errors == []

        first = rows[-1][0]  # the last segment, damaged
        flip_row(path, first)
        flow = segment_flow(url)
        async with serve(flow) as base, httpx.AsyncClient(base_url=base) as client:
            await flow.store_ready()
            chunks, errors = await read_sse(client, sid, {})
            after = max(first, 1)
            polled = (await client.get(f"/v1/streams/{sid}/poll?after_seq={after - 1}")).json()
    assert [c["seq"] for c in chunks] == list(range(first))
    assert [e["code"] for e in errors] == ["corrupt"]
    assert polled == [
        {"error": {"code": "corrupt", "message": f"stored seq {after} failed its check"}}
    ]
