"""The backplane on NATS JetStream (``--backplane nats://host:4222``).

The same reading side as the Redis engine (followers, remote readers, the
msgpack chunk encoding); the layout, limits and what differs from Redis are
in :mod:`icefloe.backplane.nats.layout` and docs/deploy.md ("NATS
JetStream"). ``nats`` (nats-py) is imported lazily.
"""

from __future__ import annotations

from icefloe.backplane.nats.layout import Layout, parse_nats_url

__all__ = ["Layout", "parse_nats_url"]
