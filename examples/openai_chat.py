"""Stream a chat answer from any OpenAI-compatible server through an icefloe flow.

Run it with ``python examples/openai_chat.py`` after setting, as the openai SDK
reads them:

* ``OPENAI_BASE_URL``: the server, e.g. ``https://api.openai.com/v1``, a vLLM
  or Ollama server (``http://localhost:11434/v1``), or OpenRouter;
* ``OPENAI_API_KEY``: its key (any text for a local server);
* ``OPENAI_MODEL``: the model (default ``gpt-4o-mini``);

and optionally the question as arguments. It needs the ``openai`` extra
(``pip install 'icefloe[openai]'``). The node relays the model's stream with
:func:`icefloe.llm.openai.stream_chat`: tokens reach the reader as they come,
the done chunk carries the finish reason and token usage, and a provider
error ends the stream with a code (``rate_limited``, ``unavailable``...).
"""

from __future__ import annotations

import asyncio
import os
import sys

import openai

from icefloe import Context, Headers, Message, Node, StreamError, create
from icefloe.llm.openai import stream_chat


async def main(question: str) -> int:
    model = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
    async with openai.AsyncOpenAI() as client:

        async def llm(msg: Message, ctx: Context) -> None:
            messages = [{"role": "user", "content": msg.payload}]
            await stream_chat(client, ctx, parent=msg, model=model, messages=messages)

        async with create(Node(llm, name="llm").to()) as flow:
            ask = Message(payload=question, headers=Headers(tenant="demo"))
            print("llm> ", end="", flush=True)
            try:
                async for chunk in flow.stream(ask):
                    sys.stdout.write(chunk.text)
                    sys.stdout.flush()
                    if chunk.done:
                        meta = chunk.meta
                        print(f"\n\n[{meta['finish_reason']}; usage {meta['usage']}]")
            except StreamError as exc:
                print(f"\n\n[stream ended: {exc.code.value}: {exc.message}]")
                return 1
    return 0


if __name__ == "__main__":
    text = " ".join(sys.argv[1:]) or "Say hello in five words."
    sys.exit(asyncio.run(main(text)))
