"""The icefloe exception tree.

Every error icefloe raises on purpose derives from :class:`IcefloeError`; no
``asyncio`` or ``queue`` exception crosses the public API. Misuse errors also
inherit a builtin so that generic handlers keep working. The whole tree, with
the module of each class defined elsewhere::

    IcefloeError
    ├── InvalidState (+ AssertionError)      an object used in a state that forbids it
    │   └── StreamClosedError                emit after the stream ended
    ├── StreamNotFound (+ KeyError)          no stream with that id is registered
    ├── WouldBlock                           a ``*_nowait`` call could not finish now
    ├── EndOfStream                          every producer finished (iteration ends)
    ├── ClosedResourceError                  this handle was closed locally
    ├── BrokenResourceError                  the other side went away
    ├── StreamError                          a stream ended abnormally; ``.code`` says why
    │   ├── StreamGap                        core.reassembly: a seq never came (history_gone)
    │   └── ReassemblyFull                   core.reassembly: max_streams reached (overloaded)
    ├── SequenceError (+ ValueError)         ordering violations in the reorder buffer
    │   ├── DuplicateSeq
    │   └── ReorderOverflow                  reorder buffer over its limit (a gap too wide)
    ├── CreditOverrun (+ ValueError)         more consumed than granted
    ├── DecodeError (+ ValueError)           bytes that are not a valid chunk or frame
    │   ├── FrameTooLarge
    │   ├── ChecksumMismatch
    │   ├── CorruptRecord                    store.records: a stored record that fails its checks
    │   └── BadRequest                       core.ops: a client op that does not decode
    ├── EncodeError (+ ValueError)           a chunk holds a value the wire format cannot carry
    ├── FilterError (+ ValueError)           core.filter_syntax: a hub filter that does not compile
    ├── TopicError (+ ValueError)            core.topics: a bad topic name or pattern
    ├── SessionError                         core.sessions: a WebSocket session op refused
    │   ├── SessionExpired                   no session to resume
    │   ├── TooManySessions                  the session table is full
    │   └── TooManyStreams                   a session follows its limit of streams
    ├── StoreUnavailable                     store.protocol: the store did not answer (retryable)
    ├── DeliveryFailed                       connectors.protocol: records a sink could not deliver
    ├── HttpError                            transport.errors: a request refused with a code
    ├── ConfigError                          gateway.config: a bridge config that does not check
    ├── TranslateError                       gateway.translate: a route's translate step failed
    ├── AppError                             testing.asgi_app: an app broke the ASGI protocol
    ├── WebSocketClosed                      testing.ws: the app closed the in-memory WebSocket
    │   └── WebSocketDenied                  ... before accepting it
    ├── AuthError                            transport.principals: credentials refused (401/403)
    └── RateLimited                          transport.limits: a principal over its limit (429)

The classes outside this module live with the code that raises them and are
imported from there (the transport ones need the ``server`` extra). Every
error a peer sees carries an :class:`ErrorCode`; its HTTP status and
WebSocket close are in :mod:`icefloe.core.wire_errors`, the one table.

End-of-stream conditions are named by who ended the stream (closed here,
producer finished, consumer gone, would block), after anyio's memory streams.
"""

from __future__ import annotations

from icefloe.core.wire_errors import ErrorCode

__all__ = [
    "BrokenResourceError",
    "ChecksumMismatch",
    "ClosedResourceError",
    "CorruptRecord",
    "CreditOverrun",
    "DecodeError",
    "DuplicateSeq",
    "EncodeError",
    "EndOfStream",
    "ErrorCode",
    "FrameTooLarge",
    "IcefloeError",
    "InvalidState",
    "ReorderOverflow",
    "SequenceError",
    "StreamClosedError",
    "StreamError",
    "StreamNotFound",
    "WouldBlock",
]


class IcefloeError(Exception):
    """Root of every exception icefloe raises on purpose."""


class InvalidState(IcefloeError, AssertionError):
    """An operation was attempted in a state that forbids it."""


class StreamClosedError(InvalidState):
    """Emitting on a stream that already ended.

    ``code`` is ``None`` when the producer itself finished the stream
    (``done=True`` or ``close()``), else the :class:`ErrorCode` that ended it.
    """

    def __init__(self, stream_id: str, code: ErrorCode | None = None) -> None:
        self.stream_id = stream_id
        self.code = code
        why = "it is done" if code is None else f"it ended with {code.value!r}"
        super().__init__(f"cannot emit on stream {stream_id!r}: {why}")


class StreamNotFound(IcefloeError, KeyError):
    """No stream with this id is registered (it never existed or has left).

    A ``KeyError`` too, so ``except KeyError`` around a lookup keeps working.
    """

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"no stream {stream_id!r}")

    def __str__(self) -> str:
        # KeyError's own __str__ would quote the message as a repr.
        return f"no stream {self.stream_id!r}"


class WouldBlock(IcefloeError):
    """A ``*_nowait`` operation could not complete without waiting."""


class EndOfStream(IcefloeError):
    """Every producer finished; iteration turns this into ``StopAsyncIteration``."""


class ClosedResourceError(IcefloeError):
    """This handle was closed locally and cannot be used any more."""


class BrokenResourceError(IcefloeError):
    """The other side of the channel is gone (all receivers or all senders closed)."""


class StreamError(IcefloeError):
    """A stream ended without its ``done`` chunk.

    ``code`` is an :class:`ErrorCode`; ``stream_id`` names the stream.
    """

    def __init__(self, code: ErrorCode, message: str = "", stream_id: str | None = None) -> None:
        self.code = ErrorCode(code)
        self.stream_id = stream_id
        self.message = message or self.code.value
        super().__init__(f"stream {stream_id!r} ended: {self.code.value}: {self.message}")


class SequenceError(IcefloeError, ValueError):
    """A sequence number broke the ordering rules."""


class DuplicateSeq(SequenceError):
    """A seq that was already released or is already buffered."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        super().__init__(f"duplicate seq {seq}")


class ReorderOverflow(SequenceError):
    """The reorder buffer holds its limit of out-of-order items; the gap is too wide."""

    def __init__(self, next_seq: int, seq: int, limit: int) -> None:
        self.next_seq = next_seq
        self.seq = seq
        self.limit = limit
        super().__init__(
            f"seq {seq} cannot be buffered: waiting for seq {next_seq} with {limit} items held"
        )


class CreditOverrun(IcefloeError, ValueError):
    """More credit was consumed than the window had available."""


class DecodeError(IcefloeError, ValueError):
    """Bytes that do not decode to a valid chunk or frame."""


class FrameTooLarge(DecodeError):
    """A frame declares a length above the reader's ``max_frame``."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")


class ChecksumMismatch(DecodeError):
    """A frame's CRC32C does not match its payload."""


class CorruptRecord(DecodeError):
    """A stored record (:mod:`icefloe.store.records`) failed its checks.

    Its frame is torn, its CRC32C does not match, or its payload is not the
    kind of record asked for. ``code`` is always ``ErrorCode.CORRUPT`` (the
    code a stream ends with when the record cannot be recovered); ``kind``
    names what was being decoded (``"chunk"``, ``"message"``, ``"state"``,
    ``"session"``, ``"segment"``). The failing check is the ``__cause__``. The record is
    never delivered.
    """

    code = ErrorCode.CORRUPT

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"corrupt {kind} record: {detail}")


class EncodeError(IcefloeError, ValueError):
    """A chunk holds a value its wire format cannot represent.

    Examples: a ``data`` dict keyed by ``None`` (JSON keys are strings), an
    integer beyond 64 bits in msgpack, or a lone surrogate in a string.
    """
