"""The backplane's layout on one NATS server with JetStream.

``P`` is the prefix (``icefloe_bp`` unless the URL's ``prefix`` query
parameter says otherwise; letters, digits, ``_`` and ``-`` only)::

    P_chunks    JetStream stream, subjects ``P.c.>``: the chunks of every
                stream, one subject ``P.c.<token>`` per stream; a message is
                one msgpack chunk, or the abnormal end (header
                ``Icefloe-End: <code>``, the message as payload). Limits:
                ``history + 1`` messages per subject, ``TTL_S`` max age,
                ``max_bytes`` (URL, default 256 MiB) in all, oldest dropped.
    P_meta      KV bucket: ``<token>`` -> the stream's meta (JSON), one
                revision kept, ``TTL_S`` max age; a running stream's meta
                not refreshed for ``RUNNING_TTL_S`` reads as gone.
    P.p.<token> core subject: reader positions (``<process> <seq> <unix ms>``)
                that the producing process subscribes to.
    P.x         core subject: cancel requests (payload: the stream id).
    P.h         core subject: hub events (payload: origin process id, event).

``<token>`` is the stream id when it is letters, digits, ``_`` and ``-``
only, else ``=`` and its UTF-8 bytes in hex (a subject token and a KV key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from icefloe.core.url_options import split_options

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_PREFIX", "END_HEADER", "Layout", "parse_nats_url"]

#: the prefix when the URL names none
DEFAULT_PREFIX: Final = "icefloe_bp"
#: bytes the chunk stream keeps in all when the URL says nothing (oldest dropped)
DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024
#: the header marking a stream's abnormal end in its chunk subject
END_HEADER: Final = "Icefloe-End"

_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_OPTIONS = ("prefix", "storage", "max_bytes")


@dataclass(frozen=True, slots=True)
class Options:
    """What a ``nats://`` backplane URL says besides the server."""

    #: the server URL as nats-py takes it (no query)
    server: str
    prefix: str = DEFAULT_PREFIX
    #: JetStream storage of the chunk stream and the meta bucket
    storage: str = "memory"
    max_bytes: int = DEFAULT_MAX_BYTES


def parse_nats_url(url: str) -> Options:
    """``nats://host:4222?prefix=P&storage=memory|file&max_bytes=N``.

    :raises ValueError: not a ``nats://``/``tls://`` URL, or a bad option.
    """
    if urlsplit(url).scheme not in ("nats", "tls"):
        raise ValueError(f"not a nats:// or tls:// URL: {url!r}")
    server, query = split_options(url, _OPTIONS)
    # A blank option (``?prefix=``) is its default, as an absent one.
    prefix = query.get("prefix") or DEFAULT_PREFIX
    if not _SAFE.fullmatch(prefix):
        raise ValueError(f"a NATS backplane prefix is letters, digits, _ and - only: {prefix!r}")
    storage = query.get("storage") or "memory"
    if storage not in ("memory", "file"):
        raise ValueError(f"storage must be memory or file, got {storage!r}")
    try:
        max_bytes = int(query.get("max_bytes") or DEFAULT_MAX_BYTES)
    except ValueError:
        raise ValueError(f"max_bytes must be an integer: {query['max_bytes']!r}") from None
    return Options(server, prefix, storage, max_bytes)


def token(stream_id: str) -> str:
    """The subject token and KV key of ``stream_id``."""
    if _SAFE.fullmatch(stream_id):
        return stream_id
    return "=" + stream_id.encode().hex()


@dataclass(frozen=True, slots=True)
class Layout:
    """The names under one prefix."""

    prefix: str = DEFAULT_PREFIX

    @property
    def chunk_stream(self) -> str:
        return f"{self.prefix}_chunks"

    @property
    def chunk_subjects(self) -> str:
        return f"{self.prefix}.c.>"

    def chunks(self, stream_id: str) -> str:
        return f"{self.prefix}.c.{token(stream_id)}"

    @property
    def meta_bucket(self) -> str:
        return f"{self.prefix}_meta"

    def positions(self, stream_id: str) -> str:
        return f"{self.prefix}.p.{token(stream_id)}"

    @property
    def control(self) -> str:
        return f"{self.prefix}.x"

    @property
    def hub(self) -> str:
        return f"{self.prefix}.h"
