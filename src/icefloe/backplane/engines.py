"""The engine a ``--backplane`` URL names, picked by its scheme.

``redis://`` / ``rediss://``: :class:`~icefloe.backplane.engine.RedisBackplane`
(Redis Streams); ``nats://`` / ``tls://``:
:class:`~icefloe.backplane.nats.engine.NatsBackplane` (NATS JetStream).
Each engine's client library is imported only when its engine is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from icefloe.backplane.protocol import Engine

__all__ = ["check_url", "engine_for"]

REDIS_SCHEMES = ("redis", "rediss")
NATS_SCHEMES = ("nats", "tls")


def check_url(url: str) -> None:
    """Validate a ``--backplane`` URL without connecting.

    :raises ValueError: an unknown scheme or a bad option.
    """
    scheme = urlsplit(url).scheme
    if scheme in REDIS_SCHEMES:
        from icefloe.backplane.keys import parse_url

        parse_url(url)
    elif scheme in NATS_SCHEMES:
        from icefloe.backplane.nats.layout import parse_nats_url

        parse_nats_url(url)
    else:
        raise ValueError(
            f"--backplane must be a redis://, rediss://, nats:// or tls:// URL, got {url!r}"
        )


def engine_for(
    url: str, *, history: int, window: int, on_cancel: Callable[[str], object]
) -> Engine:
    """The (not yet opened) engine for ``url``: call ``open()`` before use.

    :raises ValueError: see :func:`check_url`.
    """
    check_url(url)
    if urlsplit(url).scheme in NATS_SCHEMES:
        from icefloe.backplane.nats.engine import NatsBackplane

        return NatsBackplane(url, history=history, window=window, on_cancel=on_cancel)
    # redis-py is imported here, before the loop serves: imported by open(),
    # its import time is loop lag, which the flow's load watch reads as an
    # overload at start (new runs refused for a second or two).
    import redis.asyncio  # noqa: F401

    from icefloe.backplane.engine import RedisBackplane

    return RedisBackplane(url, history=history, window=window, on_cancel=on_cancel)
