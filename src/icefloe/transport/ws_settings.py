"""The limits of the WebSocket edge (``/v1/ws``): :class:`WsSettings`.

docs/websocket.md documents each of them and its default.
"""

from __future__ import annotations

from dataclasses import dataclass

from icefloe.core.op_types import MAX_CREDIT

__all__ = ["MAX_CREDIT", "WsSettings"]

#: credit one stream may hold (a client granting more is capped, not refused)


@dataclass(frozen=True, slots=True)
class WsSettings:
    """Limits of the WebSocket edge; each is a documented promise."""

    #: initial credit of every stream (``icefloe serve --window``)
    window: int = 256
    #: bytes of one incoming message at most (uvicorn ``ws_max_size``; over it: 1009)
    max_frame: int = 1024 * 1024
    #: seconds a detached session can be resumed
    session_ttl_s: float = 30.0
    #: sessions kept at once (attached or waiting to be resumed)
    max_sessions: int = 100_000
    #: streams one connection may follow at once (topic subscriptions included)
    max_streams: int = 1024
    #: hub topic subscriptions (``sub_topic``) one connection may hold at once;
    #: over it: ``limit_exceeded`` (issue 15: many connections of one tenant
    #: each holding a thousand took every hub slot)
    max_topic_subs: int = 100
    #: seconds one send may take before the client is cut
    send_timeout_s: float = 10.0
    #: bad messages allowed in a burst, and per second after it, before 1008
    bad_burst: int = 10
    bad_per_s: float = 1.0
    #: bandwidth limit of one connection, bytes per second (``None``: unlimited)
    bytes_per_s: float | None = None
    #: bytes a connection may send at once above that pace (the bucket's size)
    burst_bytes: int = 64 * 1024
    #: bytes a stream of priority 0 may send per fair-queueing turn; priority p
    #: gets ``2 ** p`` times as much
    quantum_bytes: int = 1024
    #: encoded bytes one stream may have waiting for the connection (plus one chunk)
    stream_queue_bytes: int = 32 * 1024
    #: bytes of chunks written per run, and most packed into one ``chunks`` op
    batch_bytes: int = 16 * 1024
    #: accept ``icefloe.v1.msgpack+zstd`` (when the zstandard package is installed)
    zstd: bool = True
    #: bytes per second a connection's zstd messages may inflate to, on average
    #: (``None``: unlimited); past it the next zstd message waits to be inflated
    inflate_bytes_per_s: float | None = 8 * 1024 * 1024
    #: bytes a connection may inflate at once above that pace
    inflate_burst_bytes: int = 2 * 1024 * 1024

    def __post_init__(self) -> None:
        if not 1 <= self.window <= MAX_CREDIT:
            raise ValueError(f"window must be 1..{MAX_CREDIT}, got {self.window!r}")
        if self.max_frame < 1024:
            raise ValueError(f"max_frame must be >= 1024 bytes, got {self.max_frame!r}")
        if not self.session_ttl_s > 0 or not self.send_timeout_s > 0:
            raise ValueError("session_ttl_s and send_timeout_s must be > 0")
        if self.max_sessions < 1 or self.max_streams < 1:
            raise ValueError("max_sessions and max_streams must be >= 1")
        if self.max_topic_subs < 1:
            raise ValueError(f"max_topic_subs must be >= 1, got {self.max_topic_subs!r}")
        for name in ("bytes_per_s", "inflate_bytes_per_s"):
            rate = getattr(self, name)
            if rate is not None and not 0 < rate < float("inf"):
                raise ValueError(f"{name} must be > 0 or None, got {rate!r}")
        for name in (
            "burst_bytes",
            "quantum_bytes",
            "stream_queue_bytes",
            "batch_bytes",
            "inflate_burst_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
