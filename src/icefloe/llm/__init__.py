"""LLM provider streams to chunks: :mod:`icefloe.llm.openai`, :mod:`icefloe.llm.anthropic`.

Each adapter is an optional extra (``icefloe[openai]``, ``icefloe[anthropic]``)
and is imported only when its module is: neither ``import icefloe`` nor
``import icefloe.llm`` loads a provider SDK. The chunk shapes they emit (text,
reasoning and tool-call parts in ``data``, usage and finish reason in the done
chunk's ``meta``) are in :mod:`icefloe.llm.parts` and docs/llm.md.
"""

from __future__ import annotations

from icefloe.llm.parts import Reply, ToolCall

__all__ = ["Reply", "ToolCall"]
