"""Hub topic history in a durable store: the records and the backend contract.

A store that keeps topics (``sqlite://``, ``redis://``, ``postgresql://``;
see :func:`open_topic_store`) holds, per (tenant, topic), the last events
of ONE epoch, each as a CRC-protected record: a frame of
:mod:`icefloe.core.framing` (CRC32C) whose payload is ``RECORD_VERSION``,
the kind byte :data:`TOPIC_KIND` and a msgpack body
``[tenant, topic, epoch, offset, ts, reliability, data, headers]``.
A record that fails its frame, its kind or its body, or that is stored
under another topic or offset than it names, is skipped on load (it is
never delivered) and logged: the hub sees a gap there, so no resume can
cross it (see :mod:`icefloe.hub.sequence`).

A backend keeps three promises (tests/integration/store/test_topic_store.py):

* :meth:`TopicStore.append` stores a batch (in order) in one write and
  then trims each topic it touched: to the batch's epoch (an epoch change
  drops the old epoch's records) and to :class:`Retention`'s count and
  bytes; a topic whose last append is older than ``idle_s`` is dropped
  whole (as the hub evicts an idle topic);
* :meth:`TopicStore.load` returns every topic's records, per topic in
  offset order, leaving out topics idle past ``idle_s``;
* neither holds more than ``max_items`` records per topic after a write.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, NoReturn, Protocol, runtime_checkable
from urllib.parse import urlsplit

import msgspec

from icefloe.core.codec import Format
from icefloe.core.framing import decode_frame, encode_frame
from icefloe.core.reliability import Reliability
from icefloe.exceptions import CorruptRecord, DecodeError, EncodeError
from icefloe.store.records import MAX_RECORD, RECORD_VERSION

__all__ = [
    "TOPIC_KIND",
    "Retention",
    "TopicEvent",
    "TopicRecord",
    "TopicStore",
    "decode_topic_event",
    "encode_topic_event",
    "open_topic_store",
    "topic_events",
]

log = logging.getLogger("icefloe.store")

#: the kind byte of a topic event record (the kinds of icefloe.store.records are 1-4)
TOPIC_KIND: Final = 16
_PREFIX: Final = bytes((RECORD_VERSION, TOPIC_KIND))
_Body = tuple[str, str, str, int, int, str, Any, dict[str, Any]]
_encoder = msgspec.msgpack.Encoder()


def _reject_ext(code: int, data: memoryview) -> NoReturn:
    raise DecodeError(f"msgpack extension type {code} is not allowed in a record")


_decoder = msgspec.msgpack.Decoder(_Body, ext_hook=_reject_ext)
_ENCODE_FAILURES = (msgspec.EncodeError, TypeError, OverflowError, UnicodeEncodeError)
_DECODE_FAILURES = (msgspec.DecodeError, UnicodeDecodeError, RecursionError, DecodeError)


class TopicEvent(NamedTuple):
    """One hub event as the store keeps it (the hub's ``HubEvent`` fields)."""

    tenant: str
    topic: str
    epoch: str
    offset: int
    #: publish time, unix nanoseconds
    ts: int
    #: the publisher's reliability level (its value)
    reliability: str
    data: Any
    headers: dict[str, Any]


class TopicRecord(NamedTuple):
    """One stored topic event: its key columns and its CRC-protected record."""

    tenant: str
    topic: str
    epoch: str
    offset: int
    #: unix seconds of the append (for idleness)
    at: float
    record: bytes


@dataclass(frozen=True, slots=True)
class Retention:
    """What a store keeps per topic: the hub's history limits."""

    #: events per topic (``history_per_topic``)
    max_items: int
    #: record bytes per topic (``history_bytes_per_topic``)
    max_bytes: int
    #: seconds without an append after which a topic is dropped (``topic_idle_s``)
    idle_s: float


@runtime_checkable
class TopicStore(Protocol):
    """A durable home for hub topic history (see the module docstring)."""

    @property
    def name(self) -> str: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, records: Sequence[TopicRecord], retention: Retention) -> None:
        """Store ``records`` (in order) and trim the topics they touch.

        :raises StoreUnavailable: the backend failed; nothing of the batch is
            promised to be stored.
        """
        ...

    async def load(self, retention: Retention) -> list[TopicRecord]:
        """Every topic's records, per topic in offset order (idle topics left out)."""
        ...


def encode_topic_event(event: TopicEvent, at: float | None = None) -> TopicRecord:
    """``event`` as a record to store.

    :raises EncodeError: its data or headers are not msgpack.
    """
    try:
        payload = _PREFIX + _encoder.encode(tuple(event))
    except _ENCODE_FAILURES as exc:
        raise EncodeError(f"topic event cannot be stored as msgpack: {exc}") from exc
    record = encode_frame(payload, Format.MSGPACK)
    when = time.time() if at is None else at
    return TopicRecord(event.tenant, event.topic, event.epoch, event.offset, when, record)


def decode_topic_event(row: TopicRecord) -> TopicEvent:
    """The event ``row`` holds, after checking its frame, kind and key.

    :raises CorruptRecord: any check failed (never another exception).
    """
    try:
        frame = decode_frame(bytes(row.record), MAX_RECORD + 2)
        payload = frame.payload
        if frame.fmt is not Format.MSGPACK or payload[:2] != _PREFIX:
            raise DecodeError("not a topic event record of this version")
        event = TopicEvent(*_decoder.decode(payload[2:]))
        key = (event.tenant, event.topic, event.epoch, event.offset)
        if key != (row.tenant, row.topic, row.epoch, row.offset):
            raise DecodeError(f"record of {key!r} stored as {row[:4]!r}")
        Reliability(event.reliability)  # a level this icefloe knows (ValueError if not)
    except (*_DECODE_FAILURES, ValueError, IndexError) as exc:
        raise CorruptRecord("topic", str(exc)) from exc
    return event


def topic_events(rows: Sequence[TopicRecord]) -> list[list[TopicEvent]]:
    """``rows`` (per topic in offset order) as events grouped by topic; corrupt
    records are left out (logged), which leaves a gap where they were."""
    groups: dict[tuple[str, str], list[TopicEvent]] = {}
    for row in rows:
        try:
            event = decode_topic_event(row)
        except CorruptRecord as exc:
            log.warning("topic %r @%d: corrupt record skipped: %s", row.topic, row.offset, exc)
            continue
        groups.setdefault((row.tenant, row.topic), []).append(event)
    return list(groups.values())


def open_topic_store(url: str) -> TopicStore | None:
    """The topic store of a ``--store`` URL (not opened yet); None for
    ``memory://``, whose topics live in the hub alone.

    :raises ValueError: an unknown scheme or a malformed URL.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return None
    try:
        module_name, class_name = _BACKENDS[scheme]
    except KeyError:
        raise ValueError(f"no topic store for URL {url!r}") from None
    backend = getattr(importlib.import_module(module_name), class_name)
    store = backend.from_url(url)
    assert isinstance(store, TopicStore)
    return store


_BACKENDS = {
    "sqlite": ("icefloe.store.sqlite_topics", "SqliteTopicStore"),
    "redis": ("icefloe.store.redis_topics", "RedisTopicStore"),
    "rediss": ("icefloe.store.redis_topics", "RedisTopicStore"),
    "postgresql": ("icefloe.store.postgres_topics", "PostgresTopicStore"),
    "postgres": ("icefloe.store.postgres_topics", "PostgresTopicStore"),
}
