"""Encoding WebSocket ops (:mod:`icefloe.core.ops` re-exports every name here).

Apart from the op structs' decoding so that ``ops`` stays one concept per
module: ops in, frames out, with the chunk fast path (one msgspec encode of
the chunk and a prefix splice) and ``chunks`` batches spliced from frames
already encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import msgspec

from icefloe.core.codec import Format
from icefloe.core.messages import StreamChunk
from icefloe.exceptions import EncodeError

if TYPE_CHECKING:
    from icefloe.core.op_types import ClientOp, ServerOp

__all__ = ["encode_chunk", "encode_chunks", "encode_client", "encode_server"]

_JSON: Final = Format.JSON
_MSGPACK: Final = Format.MSGPACK

_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encode = _json_encoder.encode
_msgpack_encode = _msgpack_encoder.encode

# What a value the format cannot carry raises inside msgspec.
_ENCODE_FAILURES: Final = (msgspec.EncodeError, TypeError, OverflowError, UnicodeEncodeError)


def _encode(op: msgspec.Struct, fmt: Format) -> bytes | str:
    try:
        if fmt == _JSON:
            return _json_encode(op).decode()
        if fmt == _MSGPACK:
            return _msgpack_encode(op)
    except _ENCODE_FAILURES as exc:
        name = Format(fmt).name
        raise EncodeError(f"{type(op).__name__} cannot be encoded as {name}: {exc}") from exc
    raise ValueError(f"unknown format {fmt!r}")


def encode_server(op: ServerOp, fmt: Format) -> bytes | str:
    """Encode a server op: ``str`` (a text frame) for JSON, ``bytes`` for msgpack.

    :raises EncodeError: if a ``data``/``meta`` value cannot be carried in ``fmt``.
    :raises ValueError: if ``fmt`` is not a :class:`Format`.
    """
    return _encode(op, fmt)


def encode_client(op: ClientOp, fmt: Format) -> bytes | str:
    """Encode a client op (for clients and tests), like :func:`encode_server`.

    :raises EncodeError: if ``payload``/``data`` cannot be carried in ``fmt``.
    :raises ValueError: if ``fmt`` is not a :class:`Format`.
    """
    return _encode(op, fmt)


def _msgpack_prefix(op: str) -> bytes:
    # StreamChunk encodes as a msgpack fixmap of all its fields, so the op is
    # one more entry: a fixmap header one larger, then "op" and its name,
    # then the chunk's own entries (its encoding without the header byte).
    config = StreamChunk.__struct_config__
    fields = len(StreamChunk.__struct_fields__)
    if config.omit_defaults or config.array_like or config.tag is not None or fields >= 15:
        raise TypeError("encode_chunk needs StreamChunk to encode as a fixed msgpack fixmap")
    return bytes((0x80 | (fields + 1),)) + _msgpack_encode("op") + _msgpack_encode(op)


_JSON_CHUNK: Final = b'{"op":"chunk",'
_JSON_END: Final = b'{"op":"end",'
_MSGPACK_CHUNK: Final = _msgpack_prefix("chunk")
_MSGPACK_END: Final = _msgpack_prefix("end")


def encode_chunk(chunk: StreamChunk, fmt: Format) -> bytes | str:
    """Encode ``chunk`` as a ``chunk`` op, or ``end`` if it is the ``done`` chunk.

    The output is exactly ``encode_server(Chunk(...) or End(...), fmt)``: the
    op name, then the chunk's fields. It costs one msgspec encode of the chunk
    and a prefix splice (plus the UTF-8 decode of a text frame for JSON).

    :raises EncodeError: if ``meta`` or ``data`` cannot be carried in ``fmt``.
    :raises ValueError: if ``fmt`` is not a :class:`Format`.
    """
    try:
        if fmt == _JSON:
            # The chunk's object without its "{", after the op's "{...,".
            return ((_JSON_END if chunk.done else _JSON_CHUNK) + _json_encode(chunk)[1:]).decode()
        if fmt == _MSGPACK:
            return (_MSGPACK_END if chunk.done else _MSGPACK_CHUNK) + _msgpack_encode(chunk)[1:]
    except _ENCODE_FAILURES as exc:
        raise EncodeError(f"chunk cannot be encoded as {Format(fmt).name}: {exc}") from exc
    raise ValueError(f"unknown format {fmt!r}")


_JSON_CHUNKS: Final = '{"op":"chunks","chunks":['
# fixmap of 2, "op": "chunks", "chunks": then the array header
_MSGPACK_CHUNKS: Final = b"\x82" + _msgpack_encode("op") + _msgpack_encode("chunks") * 2


def encode_chunks(frames: Sequence[bytes | str], fmt: Format) -> bytes | str:
    """One ``chunks`` op carrying ``frames``, each an :func:`encode_chunk` output.

    A splice, not a re-encode: the frames are copied in as they are. The
    result is what ``encode_server(Chunks(chunks=[...]), fmt)`` gives.

    :raises ValueError: if ``fmt`` is not a :class:`Format`, or a frame's type
        does not match it (``str`` for JSON, ``bytes`` for msgpack).
    """
    if fmt == _JSON:
        if not all(type(frame) is str for frame in frames):
            raise ValueError("JSON chunk frames must be str")
        return _JSON_CHUNKS + ",".join(frames) + "]}"  # type: ignore[arg-type]
    if fmt == _MSGPACK:
        if not all(type(frame) is bytes for frame in frames):
            raise ValueError("msgpack chunk frames must be bytes")
        return _MSGPACK_CHUNKS + _array_header(len(frames)) + b"".join(frames)  # type: ignore[arg-type]
    raise ValueError(f"unknown format {fmt!r}")


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")
