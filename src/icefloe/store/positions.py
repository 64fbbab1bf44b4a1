"""Connector positions: the rules every backend's ``put_position`` keeps.

A position is where a connector consumer got to in a broker: a Kinesis
shard's checkpointed sequence number, an offset. The store keeps one value
per ``(namespace, key)`` until it is replaced: ``namespace`` names the
consumer (``"kinesis/orders/billing"``), ``key`` the partition (a shard id).
Values are opaque bytes like every other record; a connector writes them as
records of :mod:`icefloe.store.records` (CRC32C-framed), so corruption is
caught by whoever reads them back, whatever the backend.

Limits (checked before any I/O, the same on every backend):

=================  ======================================
``namespace``      1 to :data:`MAX_NAMESPACE` characters
``key``            1 to :data:`MAX_KEY` characters
``value``          at most :data:`MAX_POSITION_BYTES` bytes
=================  ======================================

A namespace holds as many keys as its consumer writes (one per shard or
partition); nothing expires them.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_KEY", "MAX_NAMESPACE", "MAX_POSITION_BYTES", "check_position"]

#: the longest namespace, in characters (a stream name and a consumer name fit)
MAX_NAMESPACE: Final = 512
#: the longest key, in characters (a shard id or partition number fits many times)
MAX_KEY: Final = 256
#: the largest value, in bytes (a position is a sequence number, not a payload)
MAX_POSITION_BYTES: Final = 64 * 1024


def check_position(namespace: str, key: str | None = None, value: bytes | None = None) -> None:
    """Refuse a namespace, key or value out of the limits (see the module docstring).

    :raises ValueError: naming what is wrong.
    :raises TypeError: ``value`` is not bytes.
    """
    if not isinstance(namespace, str) or not 1 <= len(namespace) <= MAX_NAMESPACE:
        raise ValueError(f"a position namespace is 1 to {MAX_NAMESPACE} characters")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY):
        raise ValueError(f"a position key is 1 to {MAX_KEY} characters")
    if value is not None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"a position value must be bytes, got {type(value).__name__}")
        if len(value) > MAX_POSITION_BYTES:
            raise ValueError(f"a position value is at most {MAX_POSITION_BYTES} bytes")
