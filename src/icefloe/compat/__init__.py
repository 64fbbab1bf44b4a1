"""Compatibility layers for code written against other libraries' APIs.

* :mod:`icefloe.compat.penguiflow`: node functions written for penguiflow's
  ``ctx.emit_chunk`` / ``StreamChunk`` API run unchanged as icefloe nodes.
"""

from __future__ import annotations

__all__: list[str] = []
