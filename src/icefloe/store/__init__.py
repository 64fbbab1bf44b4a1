"""Durable state: runs, chunks, checkpoints, idempotency keys, sessions.

:func:`open_store` picks a backend by URL; every backend implements
:class:`Store` (see :mod:`icefloe.store.protocol` for the rules they keep).
Network backends import their client library only when chosen.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from icefloe.store.memory import MemoryStore
from icefloe.store.protocol import Store, StoreUnavailable
from icefloe.store.types import (
    NO_SEQ,
    Checkpoint,
    RunRecord,
    RunState,
    StoredChunk,
    StoreStatistics,
    Terminal,
)

__all__ = [
    "NO_SEQ",
    "Checkpoint",
    "MemoryStore",
    "RunRecord",
    "RunState",
    "Store",
    "StoreStatistics",
    "StoreUnavailable",
    "StoredChunk",
    "Terminal",
    "open_store",
]

#: the URL schemes :func:`open_store` knows, and what each needs installed
SCHEMES = {
    "memory": "nothing",
    "sqlite": "nothing (the standard library's sqlite3)",
    "redis": "icefloe[redis]",
    "rediss": "icefloe[redis]",
    "postgresql": "icefloe[postgres]",
    "postgres": "icefloe[postgres]",
}


def open_store(url: str) -> Store:
    """The store a URL names (not opened yet: ``await store.open()``).

    ``memory://``, ``sqlite:///relative.db`` or ``sqlite:////abs/path.db``,
    ``redis://host:port/db``, ``postgresql://user@host:port/db``.

    :raises ValueError: an unknown scheme or a malformed URL, naming it.
    """
    scheme = urlsplit(url).scheme.lower() if isinstance(url, str) else ""
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise ValueError(f"unknown store URL {url!r}; expected one of {known}")
    if scheme == "memory":
        return MemoryStore()
    # Each backend module parses its own URL and imports its client lazily.
    module_name, class_name = _BACKENDS[scheme]
    backend = getattr(importlib.import_module(module_name), class_name)
    store = backend.from_url(url)
    assert isinstance(store, Store)
    return store


_BACKENDS = {
    "sqlite": ("icefloe.store.sqlite", "SqliteStore"),
    "redis": ("icefloe.store.redis", "RedisStore"),
    "rediss": ("icefloe.store.redis", "RedisStore"),
    "postgresql": ("icefloe.store.postgres", "PostgresStore"),
    "postgres": ("icefloe.store.postgres", "PostgresStore"),
}
