"""The WebSocket op messages of ``/v1/ws``: their fields, limits and types.

One WebSocket message carries one op: an object whose ``op`` field names it.
Each op is a frozen msgspec Struct tagged on ``op``, so a whole client message
decodes and validates in one C-level call (:func:`icefloe.core.ops.decode_client`).
Client ops are strict (unknown fields refused); server ops are lenient when
decoded, so a client keeps working when a newer server adds a field.

Split from :mod:`icefloe.core.ops`, which re-exports every public name here
and documents the validation rules (``docs/websocket.md`` has the tables).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, TypeAlias, get_args

import msgspec

from icefloe.core.messages import StreamChunk

__all__ = [
    "CLIENT_OP_NAMES",
    "MAX_CREDIT",
    "MAX_DEPTH",
    "MAX_ERROR_MESSAGE_LENGTH",
    "MAX_FILTER_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_PRIORITY",
    "MAX_SEQ",
    "MAX_TENANT_LENGTH",
    "MAX_TOPIC_LENGTH",
    "Ack",
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
    #: as ``POST /v1/streams``'s: the same key (per tenant) names the same run (issue 11)
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class Subscribe(_ClientOp, tag="subscribe", frozen=True, kw_only=True):
    """Read an existing stream from ``from_seq`` (``None``: from the live head)."""

    stream_id: Id
    from_seq: Seq | None = None
    ref: Id | None = None


class Credit(_ClientOp, tag="credit", frozen=True, kw_only=True):
    """Allow ``n`` more chunks on a stream."""

    stream_id: Id
    n: CreditCount
    ref: Id | None = None


class _StreamOp(_ClientOp, frozen=True, kw_only=True):
    """Base of the client ops that name one stream and carry nothing else (but ``ref``)."""

    stream_id: Id
    ref: Id | None = None


class Pause(_StreamOp, tag="pause", frozen=True, kw_only=True):
    """Stop sending chunks on a stream (nothing is lost) until ``resume``."""


class Resume(_StreamOp, tag="resume", frozen=True, kw_only=True):
    """Continue a paused stream (within its remaining credit)."""


class Cancel(_StreamOp, tag="cancel", frozen=True, kw_only=True):
    """Cancel a stream's run; every reader gets the ``cancelled`` terminal."""


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


class Unsubscribe(_StreamOp, tag="unsubscribe", frozen=True, kw_only=True):
    """Stop following a stream on this connection (and in its session); the
    run goes on for its other readers. The server answers ``unsubscribed``."""


class SubTopic(_ClientOp, tag="sub_topic", frozen=True, kw_only=True):
    """Subscribe to the hub topics matching ``pattern``, optionally filtered.

    ``sub_id`` names the subscription on this connection, so that
    ``unsub_topic`` can end it; without one it lasts as long as the connection.
    ``from_offset`` (with ``epoch``, as an ``event`` op carried them) resumes
    an exact topic from its retained history.
    """

    pattern: Topic
    filter: Filter | None = None
    sub_id: Id | None = None
    ref: Id | None = None
    #: replay the exact topic's retained history from this offset first
    from_offset: Annotated[int, msgspec.Meta(ge=0)] | None = None
    #: the topic epoch ``from_offset`` was read under (``history_gone`` if it changed)
    epoch: Id | None = None


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
CLIENT_OP_NAMES: Final = frozenset(cls.__struct_config__.tag for cls in get_args(ClientOp))


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
