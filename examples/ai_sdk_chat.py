"""Serve a chat flow to the Vercel AI SDK's ``useChat`` (docs/ai-sdk.md).

Run it with ``python examples/ai_sdk_chat.py`` (``PORT`` sets the port,
default 8765), then point ``useChat``'s ``DefaultChatTransport`` at
``http://127.0.0.1:8765/v1/chat``, or run the Node client of docs/ai-sdk.md.
A page served by ``next dev`` (http://localhost:3000) may call it: CORS
allows that origin.

The node stands in for a model: it reasons, calls a ``word_count`` tool on
the last user message, and answers word by word. A chunk's ``data`` carries
the reasoning and the tool call, its ``text`` the answer, and the done
chunk's ``meta`` the finish reason: the mapping of docs/ai-sdk.md.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from icefloe import Context, Message, Node, create
from icefloe.runtime.flow import Flow

#: seconds between two words of the answer
PACE_S = 0.03


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text parts of the last user message (the AI SDK's UIMessage shape)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            parts = message.get("parts", [])
            return "".join(p.get("text", "") for p in parts if p.get("type") == "text")
    return ""


def answer(text: str) -> str:
    return f"Your message has {len(text.split())} words. Thanks for asking!"


async def assistant(msg: Message, ctx: Context) -> None:
    """The payload is the body ``useChat`` posted: ``id``, ``messages``, ``trigger``..."""
    text = last_user_text(msg.payload["messages"])
    thought = {"type": "reasoning", "id": "r", "delta": "Count the words first."}
    await ctx.emit_chunk(parent=msg, text="", data=thought)
    call = {"type": "tool-input-available", "id": "call-1", "name": "word_count"}
    await ctx.emit_chunk(parent=msg, text="", data={**call, "input": {"text": text}})
    result = {
        "type": "tool-output-available",
        "id": "call-1",
        "output": {"words": len(text.split())},
    }
    await ctx.emit_chunk(parent=msg, text="", data=result)
    for i, word in enumerate(answer(text).split(" ")):
        # The answer is the next step: after the tool's output.
        step = {"type": "step"} if i == 0 else None
        await ctx.emit_chunk(parent=msg, text=word if i == 0 else f" {word}", data=step)
        await asyncio.sleep(PACE_S)
    await ctx.emit_chunk(parent=msg, text="", done=True, meta={"finish_reason": "stop"})


def build_flow() -> Flow:
    return create(Node(assistant, name="assistant").to())


def main() -> None:
    import uvicorn

    from icefloe.transport.app import EdgeSettings, create_app, server_options

    settings = EdgeSettings(allow_origins=("http://localhost:3000",))
    port = int(os.environ.get("PORT", "8765"))
    print(f"useChat endpoint: http://127.0.0.1:{port}/v1/chat", flush=True)
    app = create_app(build_flow(), settings)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", **server_options(settings))


if __name__ == "__main__":
    main()
