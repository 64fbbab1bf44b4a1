"""A token stream through Redis Streams: one flow writes it, another replays it.

Run it with ``python examples/redis_bridge.py`` (needs the ``redis`` extra and
a Redis at 127.0.0.1:6379, or pass another URL as the first argument). The
producing flow's chunks go to a Redis stream with
:func:`~icefloe.connectors.flows.drain_to_sink`; the consuming flow reads
them with a consumer group, puts them back in order
(:class:`~icefloe.connectors.flows.StreamFeed`) and serves them as one of its
own streams, which any icefloe reader or transport can follow.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from redis.asyncio import Redis

from icefloe import Context, Headers, Message, Node, create
from icefloe.connectors.flows import StreamFeed, drain_to_sink
from icefloe.connectors.redis_streams import RedisStreamsSink, RedisStreamsSource


async def llm(msg: Message, ctx: Context) -> None:
    """A stand-in for a model: one chunk per word."""
    for word in str(msg.payload).split():
        await ctx.emit_chunk(parent=msg, text=word + " ")
    await ctx.emit_chunk(parent=msg, text="", done=True)


async def ignore(msg: Message, ctx: Context) -> None:
    return None


async def main(url: str) -> None:
    client = Redis.from_url(url)
    key = f"icefloe-example-{uuid.uuid4().hex[:8]}"
    producer, consumer = create(Node(llm, name="llm").to()), create(Node(ignore, name="x").to())
    try:
        async with producer, consumer:
            message = Message("tokens cross the broker in order", Headers(tenant="acme"))
            async with RedisStreamsSink(client, key) as sink:
                sent = await drain_to_sink(
                    producer.stream(message), sink, tenant="acme", trace_id=message.trace_id
                )
            print(f"sent {sent} chunks to the Redis stream {key}")
            source = RedisStreamsSource(client, key, group="example", consumer="c1")
            async with source:
                stats = await StreamFeed(source, consumer).run(until_ended=1)
            replayed = consumer.subscribe(message.trace_id)
            text = "".join([chunk.text async for chunk in replayed])
            print(f"replayed {stats.fed} chunks: {text.strip()}")
    finally:
        await client.delete(key)
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"))
