"""The WebSocket op messages of ``/v1/ws``: types, validation, encoders.

One WebSocket message carries one op: an object whose ``op`` field names it.
Each op is a frozen msgspec Struct tagged on ``op``, so a whole client message
decodes and validates in one C-level call. This module is sans-I/O: it turns
frames into ops and ops into frames; the endpoint does the rest.

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
from typing import Annotated, Any, ClassVar, Final, NoReturn, TypeAlias, get_args

import msgspec

from icefloe.core.codec import Format
from icefloe.core.messages import StreamChunk
from icefloe.core.op_encoding import encode_chunk, encode_chunks, encode_client, encode_server
from icefloe.core.wire_errors import ErrorCode
from icefloe.exceptions import DecodeError

__all__ = [
    "MAX_CREDIT",
    "MAX_DEPTH",
    "MAX_ERROR_MESSAGE_LENGTH",
    "MAX_FILTER_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_PRIORITY",
    "MAX_SEQ",
    "MAX_TENANT_LENGTH",
    "MAX_TOPIC_LENGTH",
    "SUBPROTOCOLS",
    "SUBPROTOCOL_JSON",
    "SUBPROTOCOL_MSGPACK",
    "SUBPROTOCOL_MSGPACK_ZSTD",
    "Ack",
    "BadRequest",
    "Cancel",
    "Chunk",
    "Chunks",
    "ClientOp",
    "Credit",
    "End",
    "Error",
    "Event",
    "Hello",
    "Input",
    "Pause",
    "Ping",
    "Pong",
    "Publish",
    "Resume",
    "ServerOp",
    "Start",
    "StartHeaders",
    "Started",
    "SubTopic",
    "Subscribe",
    "UnsubTopic",
    "Unsubscribe",
    "Unsubscribed",
    "Welcome",
    "decode_client",
    "decode_server",
    "encode_chunk",
    "encode_chunks",
    "encode_client",
    "encode_server",
    "negotiate_subprotocol",
]

# -- limits and names ------------------------------------------------------------

#: longest ``stream_id``, ``session_id`` or ``ref``, in characters
MAX_ID_LENGTH: Final = 128
#: longest ``headers.tenant``, in characters (as ``POST /v1/streams``)
MAX_TENANT_LENGTH: Final = 200
#: longest ``topic`` or topic ``pattern``, in characters (as ``POST /v1/streams``)
MAX_TOPIC_LENGTH: Final = 200
#: longest ``sub_topic`` ``filter``, in characters
MAX_FILTER_LENGTH: Final = 1024
#: ``headers.priority`` lies in ``-MAX_PRIORITY..MAX_PRIORITY``
MAX_PRIORITY: Final = 1000
#: largest ``credit.n``; credit is granted in ``1..MAX_CREDIT`` per op
MAX_CREDIT: Final = 2**31 - 1
#: largest ``seq`` / ``from_seq`` (stores keep seqs as signed 64-bit integers)
MAX_SEQ: Final = 2**63 - 1
#: most nested lists/maps in a ``payload`` or ``data`` value
MAX_DEPTH: Final = 64
#: longest :exc:`BadRequest` message, in characters; longer ones are cut in the middle
MAX_ERROR_MESSAGE_LENGTH: Final = 200

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


# -- field types -------------------------------------------------------------------

# \A and \Z, not ^ and $: "$" also matches before a final newline.
_TEXT_PATTERN: Final = "\\A[^\\x00-\\x1f\\x7f]*\\Z"  # no control characters

# An id's characters (printable ASCII, no space) are checked by decode_client
# after msgspec: a regex here would make the hot credit/ack ops 4x dearer.
Id: TypeAlias = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Tenant: TypeAlias = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_TENANT_LENGTH, pattern=_TEXT_PATTERN)
]
Topic: TypeAlias = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_TOPIC_LENGTH, pattern=_TEXT_PATTERN)
]
OptionalTopic: TypeAlias = Annotated[
    str, msgspec.Meta(max_length=MAX_TOPIC_LENGTH, pattern=_TEXT_PATTERN)
]
Filter: TypeAlias = Annotated[
    str, msgspec.Meta(max_length=MAX_FILTER_LENGTH, pattern=_TEXT_PATTERN)
]
Priority: TypeAlias = Annotated[int, msgspec.Meta(ge=-MAX_PRIORITY, le=MAX_PRIORITY)]
Seq: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
CreditCount: TypeAlias = Annotated[int, msgspec.Meta(ge=1, le=MAX_CREDIT)]


# -- client -> server ----------------------------------------------------------------


class _ClientOp(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, tag_field="op"
):
    """Base of the client ops: strict (unknown fields refused), tagged on ``op``.

    Every client op accepts an optional ``ref`` (an :data:`Id`): the server
    copies it into any ``error`` the op causes, so a client can match errors
    to the ops that caused them. ``start`` requires it.
    """


class StartHeaders(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The headers of a ``start``; the server builds the run's :class:`Headers` from them.

    ``tenant`` may be omitted: the server fills it from the principal, and
    refuses (``forbidden``) a tenant the principal may not act for.
    """

    #: the owning tenant; ``None``: the principal's
    tenant: Tenant | None = None
    #: optional hub topic the run relates to
    topic: OptionalTopic | None = None
    #: scheduling class; higher is more urgent
    priority: Priority = 0


class Hello(_ClientOp, tag="hello", frozen=True, kw_only=True):
    """The first op of a connection: open a session, or resume one.

    ``resume=True`` needs the ``session_id`` of a session that is still within
    its TTL; a ``session_id`` without ``resume`` is ignored (a fresh session).
    ``batch=True`` lets the server pack chunks that are ready together into
    one ``chunks`` op (the connection lags); ``welcome`` confirms it.
    """

    session_id: Id | None = None
    resume: bool = False
    batch: bool = False
    ref: Id | None = None

    def __post_init__(self) -> None:
        if self.resume and self.session_id is None:
            raise ValueError("resume requires a session_id")


class Start(_ClientOp, tag="start", frozen=True, kw_only=True):
    """Start a run; the server answers ``started {ref, stream_id}``."""

    ref: Id
    payload: Any = None
    headers: StartHeaders = msgspec.field(default_factory=StartHeaders)


class Subscribe(_ClientOp, tag="subscribe", frozen=True, kw_only=True):
    """Read an existing stream from ``from_seq`` (``None``: from seq 0)."""

    stream_id: Id
    from_seq: Seq | None = None
    ref: Id | None = None


class Credit(_ClientOp, tag="credit", frozen=True, kw_only=True):
    """Allow ``n`` more chunks on a stream."""

    stream_id: Id
    n: CreditCount
    ref: Id | None = None


class Pause(_ClientOp, tag="pause", frozen=True, kw_only=True):
    """Stop sending chunks on a stream (nothing is lost) until ``resume``."""

    stream_id: Id
    ref: Id | None = None


class Resume(_ClientOp, tag="resume", frozen=True, kw_only=True):
    """Continue a paused stream (within its remaining credit)."""

    stream_id: Id
    ref: Id | None = None


class Cancel(_ClientOp, tag="cancel", frozen=True, kw_only=True):
    """Cancel a stream's run; every reader gets the ``cancelled`` terminal."""

    stream_id: Id
    ref: Id | None = None


class Ack(_ClientOp, tag="ack", frozen=True, kw_only=True):
    """Record that the client durably holds a stream up to ``seq`` (for session resume)."""

    stream_id: Id
    seq: Seq
    ref: Id | None = None


class Input(_ClientOp, tag="input", frozen=True, kw_only=True):
    """Interactive input into the node producing a running stream."""

    stream_id: Id
    data: Any
    ref: Id | None = None


class Publish(_ClientOp, tag="publish", frozen=True, kw_only=True):
    """Publish an event on a hub topic."""

    topic: Topic
    data: Any
    ref: Id | None = None


class Unsubscribe(_ClientOp, tag="unsubscribe", frozen=True, kw_only=True):
    """Stop following a stream on this connection (and in its session); the
    run goes on for its other readers. The server answers ``unsubscribed``."""

    stream_id: Id
    ref: Id | None = None


class SubTopic(_ClientOp, tag="sub_topic", frozen=True, kw_only=True):
    """Subscribe to the hub topics matching ``pattern``, optionally filtered.

    ``sub_id`` names the subscription on this connection, so that
    ``unsub_topic`` can end it; without one it lasts as long as the connection.
    """

    pattern: Topic
    filter: Filter | None = None
    sub_id: Id | None = None
    ref: Id | None = None


class UnsubTopic(_ClientOp, tag="unsub_topic", frozen=True, kw_only=True):
    """End the topic subscription named ``sub_id``; the server answers ``unsubscribed``."""

    sub_id: Id
    ref: Id | None = None


class Ping(_ClientOp, tag="ping", frozen=True, kw_only=True):
    """Application-level ping; the server answers ``pong`` with the same ``ref``."""

    ref: Id | None = None


ClientOp: TypeAlias = (
    Hello
    | Start
    | Subscribe
    | Credit
    | Pause
    | Resume
    | Cancel
    | Ack
    | Input
    | Publish
    | SubTopic
    | Ping
    | Unsubscribe
    | UnsubTopic
)

#: the op names a client may send
_CLIENT_OPS: Final = frozenset(cls.__struct_config__.tag for cls in get_args(ClientOp))


# -- server -> client ----------------------------------------------------------------


class _ServerOp(msgspec.Struct, frozen=True, tag_field="op"):
    """Base of the server ops.

    Decoding them (a client's job) ignores unknown fields, so a client keeps
    working when a newer server adds one.
    """


class Welcome(_ServerOp, tag="welcome", frozen=True, kw_only=True, omit_defaults=True):
    """Answer to ``hello``: the session, whether it was resumed, the initial credit."""

    session_id: str
    resumed: bool
    #: initial credit of every stream on this connection (``--window``)
    window: int
    #: present (true) when the hello asked for ``chunks`` batches and got them
    batch: bool = False


class Started(_ServerOp, tag="started", frozen=True, kw_only=True):
    """Answer to ``start``: the new stream's id, with the client's ``ref``."""

    ref: str
    stream_id: str


class _ChunkFields(_ServerOp, frozen=True, kw_only=True):
    # The fields of StreamChunk, in its order: encode_chunk's output must
    # decode to Chunk/End exactly as if they had been encoded by encode_server.
    stream_id: str
    seq: int
    text: str
    done: bool = False
    meta: dict[str, Any] = {}
    data: Any = None
    ts: int

    def as_stream_chunk(self) -> StreamChunk:
        """The :class:`StreamChunk` this op carries."""
        return StreamChunk(
            self.stream_id, self.seq, self.text, self.done, self.meta, self.data, self.ts
        )


class Chunk(_ChunkFields, tag="chunk", frozen=True, kw_only=True):
    """One chunk of a stream (not the last): a :class:`StreamChunk` plus ``op``."""


class End(_ChunkFields, tag="end", frozen=True, kw_only=True):
    """The ``done`` chunk of a stream: a :class:`StreamChunk` plus ``op``."""


class Chunks(_ServerOp, tag="chunks", frozen=True, kw_only=True):
    """Several ``chunk``/``end`` ops sent as one message (``hello {batch: true}``).

    Each element is exactly the op it would have been on its own, so it
    keeps its own ``stream_id`` and ``seq`` and consumes its own credit; the
    list is in send order, which may interleave streams.
    """

    chunks: list[Chunk | End]


class Error(_ServerOp, tag="error", frozen=True, kw_only=True, omit_defaults=True):
    """Something went wrong; absent ``ref`` / ``stream_id`` are omitted on the wire.

    ``code`` is an :class:`~icefloe.core.wire_errors.ErrorCode`: about an op
    (``bad_request``, ``not_found``...), or the terminal of the stream
    ``stream_id`` (``cancelled``, ``failed``...). A client should accept codes
    it does not know: docs/websocket.md lists the ones a server sends.
    """

    code: str
    message: str
    ref: str | None = None
    stream_id: str | None = None


class Event(_ServerOp, tag="event", frozen=True, kw_only=True, omit_defaults=True):
    """A hub event on a subscribed topic; ``offset`` when the hub keeps one."""

    topic: str
    data: Any
    offset: int | None = None


class Pong(_ServerOp, tag="pong", frozen=True, kw_only=True, omit_defaults=True):
    """Answer to ``ping``, echoing its ``ref``."""

    ref: str | None = None


class Unsubscribed(_ServerOp, tag="unsubscribed", frozen=True, kw_only=True, omit_defaults=True):
    """Answer to ``unsubscribe`` (with its ``stream_id``) or ``unsub_topic``
    (with its ``sub_id``), echoing the op's ``ref``."""

    stream_id: str | None = None
    sub_id: str | None = None
    ref: str | None = None


ServerOp: TypeAlias = Welcome | Started | Chunk | End | Chunks | Error | Event | Pong | Unsubscribed


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
    elif op is not None and op not in _CLIENT_OPS:
        raise BadRequest(f"unknown op {op[:40]!r}", ref=ref) from exc
    else:
        detail = str(exc)
    known = op if op in _CLIENT_OPS else None
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
