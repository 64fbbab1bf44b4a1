"""The record codec: every blob a store keeps goes through here.

A record is one frame of :mod:`icefloe.core.framing` (length, format byte
``MSGPACK``, flags, payload, CRC32C), so a backend stores opaque bytes and
whoever reads them back detects a torn or flipped record. The payload is::

    offset  size  field
    0       1     version  RECORD_VERSION (1); another value is refused
    1       1     kind     a RecordKind: 1 chunk, 2 message, 3 state, 4 session, 5 segment
    2       n     body     the value (msgpack), or the raw bytes of a session

=========  ==========================================  ======================
kind       body                                        decodes to
=========  ==========================================  ======================
chunk      a :class:`StreamChunk` (msgpack map)         ``StreamChunk``
message    a start :class:`Message` with its Headers    ``Message``
state      a checkpoint's state: any msgpack value      that value (tuples
                                                        come back as lists)
session    a session blob, as given                     ``bytes``
segment    consecutive chunks of one stream, by         ``list[StreamChunk]``
           column (below)
=========  ==========================================  ======================

A **segment** holds a run of chunks of one stream, seqs ``first_seq`` up,
in one frame and so under one CRC32C: the SQLite store keeps each durable
batch as one segment (one msgpack encode and one checksum per batch, not per
chunk). Its body is the msgpack array ``[stream_id, first_seq, texts, dones,
metas, datas, tss]``: one list per field, ``dones``, ``metas`` and ``datas``
``nil`` when every chunk has the default (``False``, ``{}``, ``None``), so a
token costs its text and its timestamp. A segment is checked whole: one
flipped bit and none of its chunks decodes.

Every decoder checks the frame (:func:`~icefloe.core.framing.decode_frame`,
the same checks :class:`~icefloe.core.framing.FrameReader` makes), the
version, the kind asked for and the body, and raises
:exc:`~icefloe.exceptions.CorruptRecord` (code ``corrupt``) on any failure,
with the failing check as its cause: no other exception escapes a decode,
whatever the bytes. A chunk's decoder can also check that the record is the
one its caller looked up (``stream_id``, ``seq``), so a record stored under
the wrong key is caught too.

The CRC32C detects every single-bit flip and every burst of up to 32 bits;
a flip in the header breaks the declared length, the format or the flags.
msgpack extension types are refused in every body (they have no JSON form
for the edge to relay).
"""

from __future__ import annotations

import enum
import functools
import operator
import struct
from collections.abc import Sequence
from itertools import repeat
from typing import Any, Final, NoReturn

import google_crc32c
import msgspec

from icefloe.core import codec
from icefloe.core.codec import Format
from icefloe.core.framing import decode_frame, encode_frame
from icefloe.core.messages import NO_META, Message, StreamChunk
from icefloe.exceptions import CorruptRecord, DecodeError, EncodeError
from icefloe.store.types import StoredChunk

__all__ = [
    "MAX_RECORD",
    "RECORD_VERSION",
    "RecordKind",
    "decode_chunk",
    "decode_message",
    "decode_segment",
    "decode_session",
    "decode_state",
    "encode_chunk",
    "encode_chunks",
    "encode_message",
    "encode_segment",
    "encode_session",
    "encode_state",
]

#: the payload layout version this module writes and reads
RECORD_VERSION: Final = 1
#: the largest record body accepted on decode, in bytes (64 MiB): a declared
#: length above it is corrupt, not a reason to allocate
MAX_RECORD: Final = 64 * 1024 * 1024


class RecordKind(enum.IntEnum):
    """What a record holds; the second byte of its payload."""

    CHUNK = 1
    MESSAGE = 2
    STATE = 3
    SESSION = 4
    SEGMENT = 5


def _reject_ext(code: int, data: memoryview) -> NoReturn:
    raise DecodeError(f"msgpack extension type {code} is not allowed in a record")


_encoder = msgspec.msgpack.Encoder()
_message_decoder = msgspec.msgpack.Decoder(Message, ext_hook=_reject_ext)
_state_decoder = msgspec.msgpack.Decoder(Any, ext_hook=_reject_ext)
_PREFIX = {kind: bytes((RECORD_VERSION, kind)) for kind in RecordKind}
# Enum attribute lookups cost more than the rest of a small record's encode:
# the hot paths read these plain constants instead.
_MSGPACK: Final = Format.MSGPACK
_CHUNK: Final = RecordKind.CHUNK
_CHUNK_PREFIX: Final = _PREFIX[RecordKind.CHUNK]
_MAX_PAYLOAD: Final = MAX_RECORD + 2
# encode_chunks writes the frame of icefloe.core.framing itself, with the
# record's version and kind bytes folded into its header, so a batch makes no
# Python call per record. tests/unit/store/test_records.py checks that both
# paths give the same bytes.
_U32 = struct.Struct(">I")  # the frame's length and CRC fields
_CHUNK_FIXED: Final = bytes((_MSGPACK, 0)) + _CHUNK_PREFIX  # format, flags, version, kind
_CHUNK_SEED: Final = google_crc32c.value(_CHUNK_FIXED)
_PLUS_PREFIX = functools.partial(operator.add, len(_CHUNK_PREFIX))
_SEQ = operator.attrgetter("seq")
_astuple = msgspec.structs.astuple
_MAX_SEQ: Final = 2**63 - 1
# A segment's body: [stream_id, first_seq, texts, dones, metas, datas, tss].
_SegmentBody = tuple[
    str, int, list[str], list[bool] | None, list[dict[str, Any]] | None, list[Any] | None, list[int]
]
_segment_decoder = msgspec.msgpack.Decoder(_SegmentBody, ext_hook=_reject_ext)
# See icefloe.core.codec: what msgspec raises for values msgpack cannot carry,
# and for bytes that are not a valid value.
_ENCODE_FAILURES = (msgspec.EncodeError, TypeError, OverflowError, UnicodeEncodeError)
_DECODE_FAILURES = (msgspec.DecodeError, UnicodeDecodeError, RecursionError, DecodeError)


def _frame(kind: RecordKind, body: bytes) -> bytes:
    return encode_frame(_PREFIX[kind] + body, _MSGPACK)


def _encode_value(kind: RecordKind, value: object) -> bytes:
    try:
        return _frame(kind, _encoder.encode(value))
    except _ENCODE_FAILURES as exc:
        raise EncodeError(f"{kind.name.lower()} cannot be stored as msgpack: {exc}") from exc


def _body(record: bytes, kind: RecordKind) -> bytes:
    """The body of ``record`` after checking its frame, version and kind."""
    if not isinstance(record, bytes | bytearray | memoryview):
        raise CorruptRecord(kind.name.lower(), f"expected bytes, got {type(record).__name__}")
    try:
        frame = decode_frame(record if type(record) is bytes else bytes(record), _MAX_PAYLOAD)
    except DecodeError as exc:
        raise CorruptRecord(kind.name.lower(), str(exc)) from exc
    payload = frame.payload
    if frame.fmt is not _MSGPACK:
        raise CorruptRecord(kind.name.lower(), f"frame format is {frame.fmt.name}, not MSGPACK")
    if len(payload) < 2:
        raise CorruptRecord(kind.name.lower(), "payload too short for a version and a kind")
    if payload[0] != RECORD_VERSION:
        raise CorruptRecord(kind.name.lower(), f"unknown record version {payload[0]}")
    if payload[1] != kind:
        name = kind.name.lower()
        raise CorruptRecord(name, f"record holds kind {payload[1]}, not {int(kind)} ({name})")
    return payload[2:]


def encode_chunk(chunk: StreamChunk) -> bytes:
    """``chunk`` as a record.

    :raises EncodeError: ``meta`` or ``data`` holds a value msgpack cannot carry.
    """
    return encode_frame(_CHUNK_PREFIX + codec.encode_chunk_msgpack(chunk), _MSGPACK)


def encode_chunks(chunks: Sequence[StreamChunk]) -> list[StoredChunk]:
    """Each of ``chunks`` as a record with its seq, in order: the records
    :func:`encode_chunk` makes, built by builtins (``map``), with no Python
    bytecode per chunk (the store writer encodes every durable chunk here).

    :raises EncodeError: a chunk's ``meta`` or ``data`` holds a value msgpack
        cannot carry (the whole call fails: no record is returned).
    """
    try:
        bodies = list(map(_encoder.encode, chunks))
    except _ENCODE_FAILURES as exc:
        raise EncodeError(f"chunk cannot be encoded as MSGPACK: {exc}") from exc
    # A record: header (payload length, format, flags, then the payload's
    # version and kind bytes), the msgpack body, the CRC32C of everything
    # after the length; CRC32C streams, so the seed covers the fixed bytes.
    lengths = map(_U32.pack, map(_PLUS_PREFIX, map(len, bodies)))
    crcs = map(_U32.pack, map(google_crc32c.extend, repeat(_CHUNK_SEED), bodies))
    records = map(b"".join, zip(lengths, repeat(_CHUNK_FIXED), bodies, crcs))
    # tuple.__new__ from map: a NamedTuple's own __new__ is a Python frame.
    pairs = zip(map(_SEQ, chunks), records, strict=True)
    return list(map(tuple.__new__, repeat(StoredChunk), pairs))


def decode_chunk(
    record: bytes, *, stream_id: str | None = None, seq: int | None = None
) -> StreamChunk:
    """The chunk in ``record``; with ``stream_id`` / ``seq``, also check it is that one.

    :raises CorruptRecord: the record fails a check.
    """
    body = _body(record, _CHUNK)
    try:
        chunk = codec.decode_chunk_msgpack(body)
    except DecodeError as exc:
        raise CorruptRecord("chunk", str(exc)) from exc
    if stream_id is not None and chunk.stream_id != stream_id:
        raise CorruptRecord("chunk", f"record of stream {chunk.stream_id!r} under {stream_id!r}")
    if seq is not None and chunk.seq != seq:
        raise CorruptRecord("chunk", f"record of seq {chunk.seq} under seq {seq}")
    return chunk


def encode_message(message: Message) -> bytes:
    """A run's start ``message`` (with its headers) as a record.

    :raises EncodeError: the payload or meta holds a value msgpack cannot carry.
    """
    return _encode_value(RecordKind.MESSAGE, message)


def decode_message(record: bytes) -> Message:
    """The start message in ``record``.

    :raises CorruptRecord: the record fails a check.
    """
    body = _body(record, RecordKind.MESSAGE)
    try:
        return _message_decoder.decode(body)
    except _DECODE_FAILURES as exc:
        raise CorruptRecord("message", str(exc)) from exc


def encode_state(state: object) -> bytes:
    """A checkpoint's ``state`` (any msgpack-able value) as a record.

    :raises EncodeError: ``state`` holds a value msgpack cannot carry.
    """
    return _encode_value(RecordKind.STATE, state)


def decode_state(record: bytes) -> Any:
    """The checkpoint state in ``record`` (msgpack types: tuples come back as lists).

    :raises CorruptRecord: the record fails a check.
    """
    body = _body(record, RecordKind.STATE)
    try:
        return _state_decoder.decode(body)
    except _DECODE_FAILURES as exc:
        raise CorruptRecord("state", str(exc)) from exc


def encode_session(blob: bytes) -> bytes:
    """A WebSocket session's ``blob`` as a record.

    :raises TypeError: ``blob`` is not bytes.
    """
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise TypeError(f"a session blob must be bytes, got {type(blob).__name__}")
    return _frame(RecordKind.SESSION, bytes(blob))


def decode_session(record: bytes) -> bytes:
    """The session blob in ``record``.

    :raises CorruptRecord: the record fails a check.
    """
    return bytes(_body(record, RecordKind.SESSION))


def encode_segment(chunks: Sequence[StreamChunk]) -> bytes:
    """Consecutive ``chunks`` of one stream (seqs ``chunks[0].seq`` up) as one
    segment record. Built by builtins: no Python bytecode per chunk.

    :raises ValueError: ``chunks`` is empty, or not consecutive seqs of one stream.
    :raises EncodeError: a chunk's ``meta`` or ``data`` holds a value msgpack cannot carry.
    """
    if not chunks:
        raise ValueError("a segment holds at least one chunk")
    # One tuple per chunk, transposed into one column per field (StreamChunk's
    # field order): two C calls for the whole batch.
    sids, seqs, texts, dones, metas, datas, stamps = zip(*map(_astuple, chunks), strict=True)
    count = len(seqs)
    first = seqs[0]
    if seqs != tuple(range(first, first + count)) or sids.count(sids[0]) != count:
        raise ValueError("a segment holds consecutive seqs of one stream")
    body = (
        sids[0],
        first,
        texts,
        dones if True in dones else None,
        metas if any(metas) else None,
        None if datas.count(None) == count else datas,
        stamps,
    )
    return _encode_value(RecordKind.SEGMENT, body)


def decode_segment(
    record: bytes, *, stream_id: str | None = None, first_seq: int | None = None
) -> list[StreamChunk]:
    """The chunks in segment ``record``, in seq order; with ``stream_id`` /
    ``first_seq``, also check it is the segment its caller looked up.

    :raises CorruptRecord: the record fails a check (then no chunk of it is returned).
    """
    body = _body(record, RecordKind.SEGMENT)
    try:
        sid, first, texts, dones, metas, datas, stamps = _segment_decoder.decode(body)
    except _DECODE_FAILURES as exc:
        raise CorruptRecord("segment", str(exc)) from exc
    count = len(texts)
    if not count or any(len(c) != count for c in (dones, metas, datas, stamps) if c is not None):
        raise CorruptRecord("segment", "columns of different lengths, or no chunk")
    if not 0 <= first <= _MAX_SEQ - count + 1:
        raise CorruptRecord("segment", f"seqs from {first} out of [0, 2**63)")
    if stream_id is not None and sid != stream_id:
        raise CorruptRecord("segment", f"record of stream {sid!r} under {stream_id!r}")
    if first_seq is not None and first != first_seq:
        raise CorruptRecord("segment", f"record from seq {first} under seq {first_seq}")
    return list(
        map(
            StreamChunk,
            repeat(sid, count),
            range(first, first + count),
            texts,
            repeat(False, count) if dones is None else dones,
            repeat(NO_META, count) if metas is None else metas,
            repeat(None, count) if datas is None else datas,
            stamps,
        )
    )
