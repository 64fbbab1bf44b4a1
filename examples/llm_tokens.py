"""Stream tokens from a (simulated) LLM node and print them as they arrive.

Run it with ``python examples/llm_tokens.py`` (``make demo`` serves a similar
simulated LLM, :mod:`icefloe.demo`, over HTTP with the inspector). It shows the
three things most users need first: a node emitting chunks, a consumer
iterating ``flow.stream``, and a consumer that leaves early (which cancels the
node's work and frees the stream).
"""

from __future__ import annotations

import asyncio
import sys
import time

from icefloe import Context, Headers, Message, Node, StreamError, create

TEXT = (
    "Streaming is what makes an agent feel alive: the first word appears in "
    "milliseconds, and every later word follows in order, none lost, none repeated."
)


async def llm(msg: Message, ctx: Context) -> None:
    """A stand-in for a model call: one chunk per word, paced like a real model."""
    await asyncio.sleep(0.2)  # time to first token
    for word in msg.payload.split(" "):
        await ctx.emit_chunk(parent=msg, text=word + " ")
        await asyncio.sleep(0.03)
    await ctx.emit_chunk(parent=msg, text="", done=True)


async def main() -> None:
    async with create(Node(llm, name="llm").to()) as flow:
        started = time.perf_counter()
        first_token_ms = None
        print("llm> ", end="", flush=True)
        async for chunk in flow.stream(Message(payload=TEXT, headers=Headers(tenant="demo"))):
            if first_token_ms is None:
                first_token_ms = (time.perf_counter() - started) * 1000
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
        print(f"\n\n[first token after {first_token_ms:.0f} ms, stream complete]")

        # A reader that leaves early cancels the run it started.
        seen = 0
        try:
            async for _chunk in flow.stream(Message(payload=TEXT, headers=Headers(tenant="demo"))):
                seen += 1
                if seen == 5:
                    break
        except StreamError as exc:  # not raised here: leaving early is not an error
            print(f"unexpected: {exc}")
        stats = flow.stats().streams
        print(
            f"[left after {seen} chunks; streams active={stats.active}, "
            f"registered={stats.registered}, chunks emitted={stats.emitted}]"
        )


if __name__ == "__main__":
    asyncio.run(main())
