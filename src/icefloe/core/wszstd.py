"""zstd for the ``icefloe.v1.msgpack+zstd`` WebSocket subprotocol (sans-I/O).

The two directions are compressed differently, on purpose:

* **Server to client: one zstd stream per connection.** Every binary message
  the server sends is the next piece of a single zstd frame, flushed at the
  end of each message (``ZSTD_e_flush``), so a message decompresses at once
  and in full, and later messages reuse the window of earlier ones (as
  permessage-deflate's context takeover does). Chunk messages repeat their
  stream id and field names; without the shared window a ~100-byte message
  would not shrink at all. The client keeps one
  :class:`ZstdMessageDecompressor` for the connection and feeds it every
  message in order.
* **Client to server: each message stands alone**, either plain msgpack or a
  complete zstd frame (told apart by the zstd magic number: a msgpack op is a
  map and never starts with byte ``0x28``). Independent frames cost the server
  no per-connection window, and the size of each one is bounded on its own:
  :func:`decompress_client_frame` never produces more than the ``--max-frame``
  limit, whatever the frame claims (a zstd bomb is refused, not inflated).

The ``zstandard`` package is part of the ``server`` extra and imported lazily,
so ``import icefloe`` stays light; :func:`available` says whether it is there.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from icefloe.exceptions import DecodeError, FrameTooLarge

try:
    import zstandard
except ImportError:  # pragma: no cover - the server extra installs it
    _AVAILABLE = False
else:
    _AVAILABLE = True

__all__ = [
    "LEVEL",
    "MAX_CLIENT_WINDOW",
    "WINDOW_LOG",
    "ZSTD_MAGIC",
    "ZstdMessageCompressor",
    "ZstdMessageDecompressor",
    "ZstdStatistics",
    "available",
    "compress_client_frame",
    "decompress_client_frame",
    "is_zstd",
]

#: the first four bytes of every zstd frame (RFC 8878, little-endian 0xFD2FB528)
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
#: compression level of the server's stream: level 1 compresses chunk messages as
#: well as level 3 here (they are tiny and repetitive) at a third of the context memory
LEVEL: Final = 1
#: log2 of the server stream's window: 64 KiB, about 300 KiB of context per connection
WINDOW_LOG: Final = 16
#: the largest window a client frame may ask the decoder to allocate (8 MiB)
MAX_CLIENT_WINDOW: Final = 1 << 23

# zstandard's marker for a frame header without a content size
_UNKNOWN_SIZE: Final = 2**64 - 1


def available() -> bool:
    """Whether the ``zstandard`` package is installed (the ``server`` extra)."""
    return _AVAILABLE


def _need() -> None:
    if not _AVAILABLE:  # pragma: no cover
        raise ImportError("zstd needs the zstandard package: pip install 'icefloe[server]'")


def is_zstd(frame: bytes) -> bool:
    """Whether a client's binary message is a zstd frame (else plain msgpack)."""
    return frame[:4] == ZSTD_MAGIC


class ZstdStatistics(NamedTuple):
    """What a :class:`ZstdMessageCompressor` has done."""

    #: messages compressed
    messages: int
    #: bytes before compression
    bytes_in: int
    #: bytes after compression (what went on the wire, before WebSocket framing)
    bytes_out: int


class ZstdMessageCompressor:
    """The server's half: one zstd stream, flushed at the end of every message.

    Messages must be compressed in the order they are sent, each exactly
    once: the client's decompressor follows the same stream.

    :param level: zstd compression level (default :data:`LEVEL`).
    :param window_log: log2 of the window (default :data:`WINDOW_LOG`); the
        client's decoder must accept it (zstd's default limit is 2**27).
    :raises ImportError: if ``zstandard`` is not installed.
    """

    __slots__ = ("_bytes_in", "_bytes_out", "_compress", "_flush", "_messages", "_mode")

    def __init__(self, level: int = LEVEL, window_log: int = WINDOW_LOG) -> None:
        _need()
        zstd = zstandard
        params = zstd.ZstdCompressionParameters.from_level(level, window_log=window_log)
        stream = zstd.ZstdCompressor(compression_params=params).compressobj()
        self._compress = stream.compress
        self._flush = stream.flush
        self._mode: int = zstd.COMPRESSOBJ_FLUSH_BLOCK
        self._messages = 0
        self._bytes_in = 0
        self._bytes_out = 0

    def compress(self, message: bytes) -> bytes:
        """The wire form of the next message: decompresses to ``message`` exactly."""
        out = self._compress(message) + self._flush(self._mode)
        self._messages += 1
        self._bytes_in += len(message)
        self._bytes_out += len(out)
        return out

    def statistics(self) -> ZstdStatistics:
        return ZstdStatistics(self._messages, self._bytes_in, self._bytes_out)


class ZstdMessageDecompressor:
    """The client's half: feed it every server message of the connection, in order.

    :raises ImportError: if ``zstandard`` is not installed.
    """

    __slots__ = ("_decompress", "_error")

    def __init__(self) -> None:
        _need()
        zstd = zstandard
        self._decompress = zstd.ZstdDecompressor().decompressobj().decompress
        self._error: type[Exception] = zstd.ZstdError

    def decompress(self, message: bytes) -> bytes:
        """The op a server message carries.

        :raises DecodeError: the message is not the next piece of the stream.
        """
        try:
            return self._decompress(message)
        except self._error as exc:
            raise DecodeError(f"invalid zstd message: {exc}") from exc


def compress_client_frame(message: bytes, level: int = 3) -> bytes:
    """A client message as one independent zstd frame (with its content size).

    :raises ImportError: if ``zstandard`` is not installed.
    """
    _need()
    return bytes(zstandard.ZstdCompressor(level=level).compress(message))


# One decoder for the whole process: each call runs to completion without
# yielding, so connections never share it concurrently, and its context
# (window buffers up to MAX_CLIENT_WINDOW) is paid for once, not per connection.
_decoder: zstandard.ZstdDecompressor | None = None


def decompress_client_frame(frame: bytes, max_size: int) -> bytes:
    """Decompress one client zstd frame, refusing to produce over ``max_size`` bytes.

    The declared content size is checked before any output is allocated, and
    a frame that declares none is decoded into at most ``max_size`` bytes; so
    a small frame claiming gigabytes costs nothing but the check.

    :raises FrameTooLarge: the frame declares or produces more than ``max_size``.
    :raises DecodeError: it is not exactly one valid zstd frame (garbage,
        truncated, trailing bytes, a window over :data:`MAX_CLIENT_WINDOW`).
    :raises ImportError: if ``zstandard`` is not installed.
    """
    global _decoder
    _need()
    zstd = zstandard
    try:
        params = zstd.get_frame_parameters(frame)
    except zstd.ZstdError as exc:
        raise DecodeError(f"invalid zstd frame: {exc}") from exc
    declared = params.content_size
    if declared != _UNKNOWN_SIZE and declared > max_size:
        raise FrameTooLarge(declared, max_size)
    if params.window_size > MAX_CLIENT_WINDOW:
        raise DecodeError(f"zstd window of {params.window_size} bytes is over {MAX_CLIENT_WINDOW}")
    if _decoder is None:
        _decoder = zstd.ZstdDecompressor(max_window_size=MAX_CLIENT_WINDOW)
    try:
        # With a declared size the output is exactly that size (checked by zstd);
        # without one, max_output_size caps it.
        return bytes(_decoder.decompress(frame, max_output_size=max_size, allow_extra_data=False))
    except zstd.ZstdError as exc:
        if declared == _UNKNOWN_SIZE and _inflates_past(frame, max_size):
            raise FrameTooLarge(max_size + 1, max_size) from None
        raise DecodeError(f"invalid zstd frame: {exc}") from exc


def _inflates_past(frame: bytes, max_size: int) -> bool:
    """Whether an unsized frame decodes to more than ``max_size`` bytes (reads at
    most one byte more), to tell a bomb (1009) from a broken frame (bad_request)."""
    assert _decoder is not None
    zstd = zstandard
    try:
        with _decoder.stream_reader(frame, read_across_frames=False) as reader:
            return len(reader.read(max_size + 1)) > max_size
    except zstd.ZstdError:
        return False
