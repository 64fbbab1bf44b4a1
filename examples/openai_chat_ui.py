"""Serve ``useChat`` from any OpenAI-compatible server (docs/ai-sdk.md, docs/llm.md).

Run it with ``python examples/openai_chat_ui.py`` after setting, as the openai
SDK reads them:

* ``OPENAI_BASE_URL``: the server, e.g. ``https://api.openai.com/v1``, a vLLM
  or Ollama server (``http://localhost:11434/v1``), or OpenRouter;
* ``OPENAI_API_KEY``: its key (any text for a local server);
* ``OPENAI_MODEL``: the model (default ``gpt-4o-mini``);
* ``PORT``: the port to serve on (default 8765);

then point the AI SDK's ``DefaultChatTransport`` at
``http://127.0.0.1:8765/v1/chat`` (a page served by ``next dev`` on
http://localhost:3000 may call it: CORS allows that origin). It needs the
``openai`` extra (``pip install 'icefloe[openai]'``) and ``uvicorn``.

The node only turns the posted UI messages into Chat Completions messages and
calls :func:`icefloe.llm.openai.stream_chat`: the adapter's chunks (text,
reasoning, tool calls, the done chunk's finish reason and usage) are the
vocabulary ``POST /v1/chat`` maps to the AI SDK's parts, so ``useChat`` shows
the reasoning, the tool calls with their input, the text, and the usage as
the message's ``metadata`` with no more code. Resume after a reload and stop
(``DELETE /v1/chat/{id}/stream``, which closes the provider's response) work
as for any chat flow.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import openai

from icefloe import Context, Message, Node, create
from icefloe.llm.openai import stream_chat
from icefloe.runtime.flow import Flow

#: the UI message roles Chat Completions knows
ROLES = frozenset({"system", "user", "assistant"})


def chat_messages(ui_messages: Any) -> list[dict[str, str]]:
    """The AI SDK's UI messages as Chat Completions messages: their text parts.

    Parts other than text (reasoning, tool calls of earlier turns, files) are
    left out: a model that needs its earlier tool calls back needs them in
    the provider's own shape, which a UI message does not keep.
    """
    out: list[dict[str, str]] = []
    for message in ui_messages if isinstance(ui_messages, list) else []:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            continue
        parts = message.get("parts")
        texts = [
            p["text"]
            for p in (parts if isinstance(parts, list) else [])
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        ]
        if texts:
            out.append({"role": message["role"], "content": "".join(texts)})
    return out


def build_flow(
    client: openai.AsyncOpenAI, model: str, *, tools: Sequence[dict[str, Any]] = ()
) -> Flow:
    """A chat flow answering each posted conversation with ``model`` on ``client``.

    ``tools`` are the Chat Completions tool definitions offered to the model:
    its calls reach ``useChat`` as tool parts in state ``input-available`` (the
    page runs them, or a node of yours does and emits their output).
    """
    extra: dict[str, Any] = {"tools": list(tools)} if tools else {}

    async def llm(msg: Message, ctx: Context) -> None:
        messages = chat_messages(msg.payload.get("messages"))
        await stream_chat(client, ctx, parent=msg, model=model, messages=messages, **extra)

    return create(Node(llm, name="llm").to())


def main() -> None:
    import uvicorn

    from icefloe.transport.app import EdgeSettings, create_app, server_options

    settings = EdgeSettings(allow_origins=("http://localhost:3000",))
    port = int(os.environ.get("PORT", "8765"))
    model = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
    client = openai.AsyncOpenAI()  # OPENAI_BASE_URL, OPENAI_API_KEY
    print(f"useChat endpoint: http://127.0.0.1:{port}/v1/chat ({model})", flush=True)
    app = create_app(build_flow(client, model), settings)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", **server_options(settings))


if __name__ == "__main__":
    main()
