"""The backplane: streams shared across gateway processes through Redis Streams
or NATS JetStream.

With ``icefloe serve --backplane redis://…`` (or ``nats://…``, the engine
chosen by :func:`~icefloe.backplane.engines.engine_for`; the NATS one is
:mod:`icefloe.backplane.nats`) each process appends the chunks
of the streams it produces to the engine, and any other process reads them
(SSE, status, list, cancel) by following the engine's log. A stream read on
the process that produces it stays on the in-process fast path. The key
layout, limits and measured figures are in docs/deploy.md.

Layering: this package sees :mod:`icefloe.core` and the engine client only;
the edge glue that ties it to a :class:`~icefloe.runtime.flow.Flow` lives in
:mod:`icefloe.transport.backplane_edge` and sees the engine through
:class:`~icefloe.backplane.protocol.Engine`. ``redis`` and ``nats`` are
imported lazily.
"""

from __future__ import annotations

from icefloe.backplane.keys import Keys, parse_url
from icefloe.backplane.meta import StreamMeta
from icefloe.backplane.reader import RemoteReader

__all__ = ["Keys", "RemoteReader", "StreamMeta", "parse_url"]
