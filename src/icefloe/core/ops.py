"""The WebSocket op messages of ``/v1/ws``: types, validation, encoders.

One WebSocket message carries one op: an object whose ``op`` field names it.
Each op is a frozen msgspec Struct tagged on ``op``, so a whole client message
decodes and validates in one C-level call. This module is sans-I/O: it turns
frames into ops and ops into frames; the endpoint does the rest. It is the
public face of three modules: the op types and limits are
:mod:`icefloe.core.op_types`', the encoders :mod:`icefloe.core.op_encoding`'
(both re-exported here); the subprotocols and decoding are here.

Subprotocols choose the format, and the format fixes the frame type:
``icefloe.v1.json`` speaks JSON in text frames, ``icefloe.v1.msgpack`` speaks
msgpack in binary frames. Encoders return ``str`` for JSON (what an ASGI
text frame takes) and ``bytes`` for msgpack, so the return type is the frame
type.

Client ops are validated strictly (see ``docs/websocket.md`` for the table):

- ids (``stream_id``, ``session_id``, ``sub_id``, ``ref``) are 1 to :data:`MAX_ID_LENGTH`
  characters of printable ASCII without spaces;
- ``tenant``, ``topic``, ``pattern`` and ``filter`` are bounded and hold no
  control characters; ``priority`` is within ±:data:`MAX_PRIORITY`;
- ``credit.n`` is in ``1..MAX_CREDIT``; ``seq`` and ``from_seq`` are in
  ``0..MAX_SEQ``;
- ``payload`` / ``data`` are any value both formats can carry: string map
  keys, integers within 64 bits, at most :data:`MAX_DEPTH` nested containers,
  no msgpack extension types (timestamps excepted);
- **unknown fields are rejected**, as ``POST /v1/streams`` rejects them: a
  typo such as ``from_sq`` must not silently mean "replay from the start".
  The subprotocol name is versioned, so new fields come with a new version.

:func:`decode_client` returns a valid op or raises :exc:`BadRequest`, never
anything else, whatever the frame. The overall frame size is the
endpoint's ``--max-frame`` limit, checked before decoding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final, NoReturn, get_args

import msgspec

from icefloe.core import op_types
from icefloe.core.codec import Format
from icefloe.core.op_encoding import encode_chunk, encode_chunks, encode_client, encode_server
from icefloe.core.op_types import *  # noqa: F403  (re-exported: see __all__)
from icefloe.core.op_types import (
    CLIENT_OP_NAMES,
    MAX_DEPTH,
    MAX_ERROR_MESSAGE_LENGTH,
    MAX_ID_LENGTH,
    ClientOp,
    Error,
    ServerOp,
)
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import DecodeError

# This module's own names, then every public name of op_types (the types and
# limits), so that the two lists cannot drift apart.
__all__ = [
    "SUBPROTOCOLS",
    "SUBPROTOCOL_JSON",
    "SUBPROTOCOL_MSGPACK",
    "SUBPROTOCOL_MSGPACK_ZSTD",
    "BadRequest",
    "decode_client",
    "decode_server",
    "encode_chunk",
    "encode_chunks",
    "encode_client",
    "encode_server",
    "negotiate_subprotocol",
]
__all__ += op_types.__all__

#: subprotocol of JSON in text frames
SUBPROTOCOL_JSON: Final = "icefloe.v1.json"
#: subprotocol of msgpack in binary frames
SUBPROTOCOL_MSGPACK: Final = "icefloe.v1.msgpack"
#: subprotocol of msgpack in binary frames, zstd-compressed (:mod:`icefloe.core.wszstd`)
SUBPROTOCOL_MSGPACK_ZSTD: Final = "icefloe.v1.msgpack+zstd"
#: every uncompressed subprotocol the server speaks, with its format
SUBPROTOCOLS: Final[Mapping[str, Format]] = MappingProxyType(
    {SUBPROTOCOL_JSON: Format.JSON, SUBPROTOCOL_MSGPACK: Format.MSGPACK}
)
# Enum attribute lookups cost more than a whole chunk splice: bind them once.
_JSON: Final = Format.JSON
_MSGPACK: Final = Format.MSGPACK

# The integers msgpack can carry (signed 64-bit up to unsigned 64-bit).
_MIN_INT: Final = -(2**63)
_MAX_INT: Final = 2**64 - 1


def negotiate_subprotocol(offered: Iterable[str], *, zstd: bool = False) -> str | None:
    """The first of the client's ``offered`` subprotocols this server speaks.

    The client lists them in its order of preference. ``None`` if it offered
    none of :data:`SUBPROTOCOLS` (nor :data:`SUBPROTOCOL_MSGPACK_ZSTD` when
    ``zstd`` is true: the server can compress); what to do then is the
    endpoint's choice (``docs/websocket.md`` proposes JSON when nothing was
    offered). Its format is msgpack.
    """
    for name in offered:
        if name in SUBPROTOCOLS or (zstd and name == SUBPROTOCOL_MSGPACK_ZSTD):
            return name
    return None


# -- errors --------------------------------------------------------------------------


class BadRequest(DecodeError):
    """A client frame that is not a valid op; answer ``error bad_request`` and carry on.

    ``message`` is safe to send back: at most :data:`MAX_ERROR_MESSAGE_LENGTH`
    characters (cut in the middle), no control characters, and it never
    repeats more of the input than that. ``ref`` is the frame's ``ref`` when
    it could be read and is a valid :data:`Id`; ``op`` the op name when it
    could be read and is known.
    """

    code: ClassVar[ErrorCode] = ErrorCode.BAD_REQUEST

    def __init__(self, message: str, *, ref: str | None = None, op: str | None = None) -> None:
        self.message = _safe_message(message)
        self.ref = ref
        self.op = op
        super().__init__(self.message)

    def to_error(self) -> Error:
        """The ``error`` op to send back."""
        return Error(code=self.code, message=self.message, ref=self.ref)


_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_ELLIPSIS: Final = " … "


def _safe_message(message: str) -> str:
    limit = MAX_ERROR_MESSAGE_LENGTH
    if len(message) > limit:
        # Keep the head (what is wrong) and the tail (msgspec's "- at `$.path`").
        tail = limit // 3
        head = limit - tail - len(_ELLIPSIS)
        message = message[:head] + _ELLIPSIS + message[-tail:]
    # Lone surrogates cannot come out of msgspec's decoders, but a message may
    # quote a str frame that held one; neither format could carry it back.
    return _CONTROL.sub("?", message).encode("utf-8", "replace").decode("utf-8")


# -- decoding ------------------------------------------------------------------------


def _reject_ext(code: int, data: memoryview) -> NoReturn:
    # Application-defined extension types have no JSON form.
    raise msgspec.DecodeError(f"msgpack extension type {code} is not allowed")


class _Envelope(msgspec.Struct):
    # Read leniently from a frame that failed to decode, for the error's ref.
    op: Any = None
    ref: Any = None


_json_client = msgspec.json.Decoder(ClientOp)
_msgpack_client = msgspec.msgpack.Decoder(ClientOp, ext_hook=_reject_ext)
_json_envelope = msgspec.json.Decoder(_Envelope)
_msgpack_envelope = msgspec.msgpack.Decoder(_Envelope, ext_hook=_reject_ext)
_json_server = msgspec.json.Decoder(ServerOp)
_msgpack_server = msgspec.msgpack.Decoder(ServerOp, ext_hook=_reject_ext)

# What malformed input raises inside msgspec: DecodeError (ValidationError is
# a subclass), UnicodeEncodeError for a str frame holding lone surrogates,
# UnicodeDecodeError for invalid UTF-8 in a msgpack string, RecursionError
# for nesting deeper than the interpreter's recursion limit.
_DECODE_FAILURES: Final = (msgspec.DecodeError, UnicodeError, RecursionError)


def _readable(frame: bytes | str, fmt: Format) -> tuple[str | None, str | None]:
    """The ``(ref, op)`` of a frame that failed to decode, where they are usable."""
    try:
        if isinstance(frame, str) or fmt == _JSON:
            envelope = _json_envelope.decode(frame)
        else:
            envelope = _msgpack_envelope.decode(frame)
    except _DECODE_FAILURES:
        return None, None
    ref = envelope.ref
    if not (isinstance(ref, str) and 0 < len(ref) <= MAX_ID_LENGTH and _is_id(ref)):
        ref = None
    op = envelope.op if isinstance(envelope.op, str) else None
    return ref, op


def _is_id(value: str) -> bool:
    return value.isascii() and value.isprintable() and " " not in value


def _value_problem(value: Any) -> str | None:
    """Why ``value`` cannot travel in both formats, or ``None`` if it can."""
    # Iterative, so a deep value cannot exhaust the stack here.
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is int:
            if not _MIN_INT <= item <= _MAX_INT:
                return "Integer outside the 64-bit range"
        elif kind is list or kind is dict:
            if depth >= MAX_DEPTH:
                return f"More than {MAX_DEPTH} nested lists/maps"
            if kind is dict:
                for key in item:
                    if type(key) is not str:
                        return "Map key is not a string"
                children = item.values()
            else:
                children = item
            stack.extend((child, depth + 1) for child in children)
    return None


# Per op type: its id fields, then its free-form value field (or None).
_AFTER_DECODE: Final = {
    cls: (
        tuple(
            f for f in cls.__struct_fields__ if f in ("stream_id", "session_id", "sub_id", "ref")
        ),
        next((f for f in cls.__struct_fields__ if f in ("payload", "data")), None),
    )
    for cls in get_args(ClientOp)
}


def decode_client(frame: bytes | str, fmt: Format) -> ClientOp:
    """Decode and validate one client WebSocket message.

    :param frame: the message: ``str`` for a text frame, ``bytes`` for binary.
    :param fmt: the connection's format (from its subprotocol).
    :raises BadRequest: if the frame is not a valid client op, or has the
        wrong frame type for ``fmt`` (binary on JSON, text on msgpack).
        Nothing else is raised for any ``frame``.
    :raises ValueError: if ``fmt`` is not a :class:`Format` (a server bug).
    """
    try:
        if fmt == _JSON and isinstance(frame, str):
            op: ClientOp = _json_client.decode(frame)
        elif fmt == _MSGPACK and not isinstance(frame, str):
            op = _msgpack_client.decode(frame)
        else:
            _wrong_frame(frame, fmt)
    except _DECODE_FAILURES as exc:
        _bad_frame(frame, Format(fmt), exc)
    ids, value_field = _AFTER_DECODE[type(op)]
    for field in ids:
        value = getattr(op, field)
        if value is not None and not _is_id(value):
            _bad_field(op, field, "Expected `str` of printable ASCII without spaces")
    if value_field is not None:
        value = getattr(op, value_field)
        if value is not None and type(value) is not str:
            problem = _value_problem(value)
            if problem is not None:
                _bad_field(op, value_field, problem)
    return op


def _wrong_frame(frame: bytes | str, fmt: Format) -> NoReturn:
    if fmt == _JSON:
        message = f"binary frame on the {SUBPROTOCOL_JSON} subprotocol: send text frames"
    elif fmt == _MSGPACK:
        message = f"text frame on the {SUBPROTOCOL_MSGPACK} subprotocol: send binary frames"
    else:
        raise ValueError(f"unknown format {fmt!r}")
    # The frame is most likely JSON either way (a client sending bytes, or a
    # JSON client on the wrong subprotocol): try it for the ref.
    raise BadRequest(message, ref=_readable(frame, _JSON)[0])


def _bad_frame(frame: bytes | str, fmt: Format, exc: Exception) -> NoReturn:
    ref, op = _readable(frame, fmt)
    if isinstance(exc, RecursionError):
        detail = "nested too deeply"
    elif isinstance(exc, UnicodeError):
        detail = "invalid UTF-8 in a string"
    elif op is not None and op not in CLIENT_OP_NAMES:
        raise BadRequest(f"unknown op {op[:40]!r}", ref=ref) from exc
    else:
        detail = str(exc)
    known = op if op in CLIENT_OP_NAMES else None
    raise BadRequest(f"invalid {known or 'message'}: {detail}", ref=ref, op=known) from exc


def _bad_field(op: ClientOp, field: str, problem: str) -> NoReturn:
    name = op.__struct_config__.tag
    assert isinstance(name, str)
    ref = op.ref if op.ref is not None and _is_id(op.ref) else None
    raise BadRequest(f"invalid {name}: {problem} - at `$.{field}`", ref=ref, op=name)


def decode_server(frame: bytes | str, fmt: Format) -> ServerOp:
    """Decode one server message (for clients and tests); unknown fields are ignored.

    JSON accepts ``str`` or ``bytes``; msgpack needs ``bytes``.

    :raises DecodeError: if the frame is not a valid server op.
    :raises ValueError: if ``fmt`` is not a :class:`Format`.
    """
    try:
        if fmt == Format.JSON:
            op: ServerOp = _json_server.decode(frame)
        elif fmt == Format.MSGPACK:
            if isinstance(frame, str):
                raise DecodeError("a msgpack server op must be bytes, not str")
            op = _msgpack_server.decode(frame)
        else:
            raise ValueError(f"unknown format {fmt!r}")
    except _DECODE_FAILURES as exc:
        raise DecodeError(f"invalid server op: {exc}") from exc
    return op
