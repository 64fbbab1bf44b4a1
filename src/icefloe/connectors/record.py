"""What crosses a broker: a :class:`Record`, and a chunk's mapping to one.

A chunk becomes one record (:func:`chunk_record`):

* **key**: the chunk's ``stream_id`` (UTF-8), so every chunk of a stream
  lands in one partition / shard / ordering key and keeps its order;
* **headers**: ``icefloe-seq``, ``icefloe-trace-id``, ``icefloe-tenant``,
  ``icefloe-reliability`` and ``icefloe-format`` (ASCII values), so a
  consumer can route, order and deduplicate without decoding the value;
* **value**: the whole chunk, encoded by the core codec in the configured
  format (JSON or msgpack).

:func:`record_chunk` reads it back and checks that headers and value agree;
anything else is a :class:`~icefloe.exceptions.DecodeError` naming what is
wrong (a poison record, for the dead-letter sink), never a crash.
"""

from __future__ import annotations

from typing import NamedTuple

from icefloe.core.codec import Format, decode, encode
from icefloe.core.messages import StreamChunk
from icefloe.core.reliability import Reliability
from icefloe.exceptions import DecodeError

__all__ = [
    "FORMAT_HEADER",
    "RELIABILITY_HEADER",
    "SEQ_HEADER",
    "TENANT_HEADER",
    "TRACE_HEADER",
    "ChunkRecord",
    "Record",
    "chunk_record",
    "record_chunk",
]

SEQ_HEADER = "icefloe-seq"
TRACE_HEADER = "icefloe-trace-id"
TENANT_HEADER = "icefloe-tenant"
RELIABILITY_HEADER = "icefloe-reliability"
FORMAT_HEADER = "icefloe-format"

_FORMAT_NAMES = {Format.JSON: b"json", Format.MSGPACK: b"msgpack"}
_FORMATS = {name: fmt for fmt, name in _FORMAT_NAMES.items()}


class Record(NamedTuple):
    """One broker record, platform-neutral.

    ``headers`` keep their order and may repeat a name (Kafka allows it);
    platforms with string attributes (Pub/Sub, Kinesis has none) map them as
    their connector documents.
    """

    #: the partition / ordering key (``None``: the platform picks)
    key: bytes | None
    #: the payload
    value: bytes
    #: ``(name, value)`` pairs
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> bytes | None:
        """The first value of header ``name``, ``None`` when absent."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class ChunkRecord(NamedTuple):
    """A chunk read back from a record, with the facts its headers carried."""

    chunk: StreamChunk
    trace_id: str
    tenant: str
    reliability: Reliability


def chunk_record(
    chunk: StreamChunk,
    *,
    trace_id: str,
    tenant: str,
    reliability: Reliability = Reliability.AT_LEAST_ONCE,
    fmt: Format = Format.MSGPACK,
) -> Record:
    """The record carrying ``chunk`` (see the module docstring for the layout).

    :raises EncodeError: the chunk holds a value ``fmt`` cannot carry.
    """
    headers = (
        (SEQ_HEADER, str(chunk.seq).encode()),
        (TRACE_HEADER, trace_id.encode()),
        (TENANT_HEADER, tenant.encode()),
        (RELIABILITY_HEADER, reliability.value.encode()),
        (FORMAT_HEADER, _FORMAT_NAMES[fmt]),
    )
    return Record(chunk.stream_id.encode(), encode(chunk, fmt), headers)


def record_chunk(record: Record) -> ChunkRecord:
    """The chunk a record carries, checked against its key and headers.

    :raises DecodeError: a header is missing or malformed, the value does not
        decode, or the value's stream id / seq disagree with key / headers.
    """
    fmt = _FORMATS.get(_required(record, FORMAT_HEADER))
    if fmt is None:
        raise DecodeError(f"record header {FORMAT_HEADER} must be json or msgpack")
    chunk = decode(record.value, fmt)
    seq_text = _required(record, SEQ_HEADER)
    if not seq_text.isdigit() or int(seq_text) != chunk.seq:
        raise DecodeError(f"record header {SEQ_HEADER}={seq_text!r} disagrees with seq {chunk.seq}")
    if record.key is not None and record.key != chunk.stream_id.encode():
        raise DecodeError("record key disagrees with the chunk's stream_id")
    try:
        reliability = Reliability.parse(_required(record, RELIABILITY_HEADER).decode())
        trace_id = _required(record, TRACE_HEADER).decode()
        tenant = _required(record, TENANT_HEADER).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"record headers: {exc}") from None
    return ChunkRecord(chunk, trace_id, tenant, reliability)


def _required(record: Record, name: str) -> bytes:
    value = record.header(name)
    if value is None:
        raise DecodeError(f"record has no {name} header")
    return value
