"""The backplane's key layout on one Redis server.

``P`` is the prefix (``icefloe:bp:`` unless the URL's ``prefix`` query
parameter says otherwise)::

    P s:<stream id>:log      STREAM  one entry per chunk, ID ``<seq>-1``, field ``c``
                                     (msgpack chunk); an abnormal end is one last
                                     entry with field ``t`` (code, message)
    P s:<stream id>:meta     HASH    tenant, state, last_seq, code, message, owner
    P s:<stream id>:readers  HASH    process id -> "<position> <unix ms>": where
                                     that process's slowest reader of the stream is
    P streams                ZSET    stream ids by start time (unix ms), for listing
    P control                STREAM  cancel requests: field ``cancel`` = stream id;
                                     session take-overs: field ``session`` = session id
    P ws:<session id>        HASH    a WebSocket session: blob, owner, holding process,
                                     attached (:mod:`icefloe.backplane.sessions`)
    P idem:<n>:<tenant>:<key>  STRING  the stream id an idempotency key started
                                       (``n``: the tenant's length, so no tenant
                                       and key pair reads as another)
    P chat:<n>:<tenant>:<id>   STRING  the stream id of a chat's reply (``/v1/chat``)
    P runs:<n>:<tenant>        ZSET    the tenant's running streams, scored by lease
                                       expiry (unix ms) (:mod:`icefloe.backplane.tenants`)
    P hub                    STREAM  hub events of every tenant and topic, numbered
                                     by the engine (see icefloe.backplane.topics)
    P hub:topic:<t>          HASH    a topic's epoch and next offset
    P runs                   STREAM  the run queue of ``--no-runs`` gateways: one entry
                                     per start (fields ``s`` stream id, ``m`` message),
                                     consumer group ``workers``
    P workers                ZSET    worker id -> last heartbeat (unix ms)
    P w:<worker id>          HASH    a worker's concurrency and runs held, with a TTL
    P members                ZSET    process id -> its last heartbeat (unix ms)
    P member:<process id>    STRING  the process's last heartbeat (JSON), with a TTL

Every per-stream key carries a TTL, refreshed by its producer while the
stream runs (a crashed producer's streams vanish by themselves).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from icefloe.core.url_options import split_options

__all__ = ["DEFAULT_PREFIX", "Keys", "entry_id", "parse_url"]

#: the key prefix when the URL names none
DEFAULT_PREFIX: Final = "icefloe:bp:"


def parse_url(url: str) -> tuple[str, str]:
    """``redis://host:port/db?prefix=P`` as (the URL without ``prefix``, the prefix).

    :raises ValueError: not a ``redis://`` or ``rediss://`` URL.
    """
    if urlsplit(url).scheme not in ("redis", "rediss"):
        raise ValueError(f"--backplane must be a redis:// or rediss:// URL, got {url!r}")
    rest, ours = split_options(url, ("prefix",))
    return rest, ours.get("prefix") or DEFAULT_PREFIX  # ?prefix= is the default


def entry_id(seq: int) -> str:
    """The Stream entry ID of chunk ``seq`` (``0-0`` is not a valid ID)."""
    return f"{seq}-1"


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys under one prefix."""

    prefix: str = DEFAULT_PREFIX

    def log(self, stream_id: str) -> str:
        return f"{self.prefix}s:{stream_id}:log"

    def meta(self, stream_id: str) -> str:
        return f"{self.prefix}s:{stream_id}:meta"

    def readers(self, stream_id: str) -> str:
        return f"{self.prefix}s:{stream_id}:readers"

    @property
    def streams(self) -> str:
        return f"{self.prefix}streams"

    @property
    def control(self) -> str:
        return f"{self.prefix}control"

    @property
    def hub(self) -> str:
        return f"{self.prefix}hub"

    # -- workers (issue 12) --
    @property
    def runs(self) -> str:
        return f"{self.prefix}runs"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}w:{worker_id}"

    def idempotency(self, tenant: str, key: str) -> str:
        return f"{self.prefix}idem:{len(tenant)}:{tenant}:{key}"

    def tenant_runs(self, tenant: str) -> str:
        return f"{self.prefix}runs:{len(tenant)}:{tenant}"

    def chat(self, tenant: str, chat_id: str) -> str:
        return f"{self.prefix}chat:{len(tenant)}:{tenant}:{chat_id}"

    # -- membership (issue 12, backplane/members.py) --
    @property
    def members(self) -> str:
        return f"{self.prefix}members"

    def member(self, process_id: str) -> str:
        return f"{self.prefix}member:{process_id}"
